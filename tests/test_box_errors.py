"""scripts/box_errors.py: which error of the paired boxes costs F1@0.5."""

import json

import pytest

TRUE = [[0, 0, 10, 20], [50, 50, 60, 60]]


@pytest.fixture
def B():
    from conftest import script

    return script("box_errors")


def _write(tmp_path, rows, name="predictions.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_fix_repairs_only_its_own_error(B):
    shifted_x = {"task": "detection", "answer": TRUE[:1], "parsed": [[5, 0, 15, 20]]}  # IoU 1/3
    shifted_y = {"task": "detection", "answer": TRUE[:1], "parsed": [[0, 10, 10, 30]]}  # IoU 1/3
    enlarged = {"task": "detection", "answer": TRUE[1:], "parsed": [[45, 45, 65, 65]]}  # IoU 1/4
    s = B.box_errors([shifted_x])
    assert [s[f"f1@0.5 {k}"] for k in ("measured", *B.FIXES)] == [0, 1, 0, 0]
    assert (s["x_offset"], s["y_offset"], s["w_ratio"], s["h_ratio"]) == (0.5, 0.0, 1.0, 1.0)
    s = B.box_errors([shifted_y])
    assert (s["f1@0.5 x centre"], s["f1@0.5 y centre"], s["y_offset"]) == (0, 1, 0.5)
    s = B.box_errors([enlarged])
    assert (s["f1@0.5 measured"], s["f1@0.5 size"], s["w_ratio"], s["h_ratio"]) == (0, 1, 2.0, 2.0)
    s = B.box_errors([shifted_x, shifted_y, enlarged])
    assert s["f1@0.5 x centre"] == pytest.approx(2 / 6) and s["paired"] == 3 and s["records"] == 3


def test_counts_missed_and_extra_boxes_as_eval_does(B):
    from geovlm import metrics

    row = {
        "task": "detection",
        "answer": TRUE,
        "parsed": [[0, 0, 10, 20], [80, 80, 90, 90], [81, 80, 91, 90]],
    }
    s = B.box_errors([row, {"task": "detection", "answer": TRUE, "parsed": None}])
    assert (s["pred"], s["true"], s["paired"]) == (3, 4, 1)  # the far boxes overlap nothing: not paired
    assert s["f1@0.5 measured"] == s["f1@0.5 x centre"] == 2 * 1 / 7
    assert metrics.count_matches(row["parsed"], TRUE, 0.5) == 1
    nothing_to_find = {"task": "detection", "answer": [], "parsed": [[0, 0, 10, 20]]}  # no boxes: left out
    s = B.box_errors([row, nothing_to_find])
    assert (s["records"], s["pred"], s["true"]) == (1, 3, 2)


def test_main_prints_one_row_per_file_and_names_bad_input(B, tmp_path, capsys):
    start = _write(
        tmp_path, [{"task": "detection", "answer": TRUE[:1], "parsed": [[5, 0, 15, 20]]}], "a.jsonl"
    )
    after = _write(tmp_path, [{"task": "detection", "answer": TRUE[:1], "parsed": TRUE[:1]}], "b.jsonl")
    out = B.main([str(start), str(after)])
    assert [s["f1@0.5 measured"] for s in out.values()] == [0, 1]
    printed = capsys.readouterr().out.splitlines()
    assert printed[2].startswith(f"| {start} ") and printed[3].startswith(f"| {after} ") and len(printed) == 4
    with pytest.raises(SystemExit):
        B.main([str(tmp_path / "missing.jsonl")])
    assert "no such file" in capsys.readouterr().err
    other = _write(tmp_path, [{"task": "vqa", "answer": "yes", "parsed": None}], "vqa.jsonl")
    with pytest.raises(SystemExit):
        B.main([str(other)])
    assert "no detection predictions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        B.main([str(other), "--task", "vqa"])
    assert "no vqa record has boxes" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "detection", "answer": TRUE}) + "\n" + "{not json\n")
    with pytest.raises(SystemExit):
        B.main([str(bad)])
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"answer": TRUE}) + "\n")
    with pytest.raises(SystemExit):
        B.main([str(bad)])
    assert f"{bad}:1: no 'task' field" in capsys.readouterr().err
