"""scripts/box_counts.py: sampled detection completions grouped by #predicted − #true."""

import gzip
import json

import pytest

TRUE = [[0, 0, 10, 10], [20, 20, 30, 30]]


def _row(step: int, parsed: list, reward: float, advantage: float, task: str = "detection") -> dict:
    return {
        "step": step,
        "task": task,
        "answer": TRUE,
        "parsed": parsed,
        "rewards": {"accuracy": reward},
        "advantage": advantage,
    }


@pytest.fixture
def B():
    from conftest import script

    return script("box_counts")


def test_rows_are_grouped_by_count_difference(B, tmp_path, capsys):
    rows = [
        _row(1, TRUE, 1.0, 0.5),  # exact: F1 1
        _row(1, TRUE[:1], 0.5, -0.25),  # one fewer, the kept box right: F1 2/3
        _row(2, [*TRUE, [50, 50, 60, 60], [70, 70, 80, 80], [90, 90, 99, 99]], 0.4, -0.25),  # +3 -> +2
        _row(2, None, 0.0, -1.0),  # nothing parsed: -2
        _row(3, [[100, 100, 110, 110]], 0.0, 0.0, task="grounding"),  # not detection: left out
    ]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = B.main([str(path)])
    assert sorted(table) == [-2, -1, 0, 2]
    assert table[0] == {"n": 1, "reward": 1.0, "f1": 1.0, "advantage": 0.5}
    assert table[-1]["f1"] == pytest.approx(2 / 3) and table[-1]["reward"] == 0.5
    assert table[2]["f1"] == pytest.approx(4 / 7) and table[-2]["f1"] == 0.0
    assert "| +2 or more | 1 |" in capsys.readouterr().out
    assert sorted(B.main([str(path), "--steps", "2"])) == [-2, 2]  # step 2 only
    packed = tmp_path / "rollouts.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert B.main([str(packed)]) == table


def test_user_mistakes_get_one_line(B, tmp_path, capsys):
    for argv in (["missing.jsonl"], [str(tmp_path), "--steps", "a-b"]):
        with pytest.raises(SystemExit):
            B.main(argv)
        assert "Traceback" not in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(_row(1, TRUE, 1.0, 0.0)) + "\n"
    for line, says in (("{not json", "not JSON"), ("[1, 2]", "not a JSON object"), ('{"step": 1}', "'task'")):
        bad.write_text(good + line + "\n")
        with pytest.raises(SystemExit):
            B.main([str(bad)])
        err = capsys.readouterr().err
        assert "bad.jsonl:2: " in err and says in err and "Traceback" not in err, err
    fake_gz = tmp_path / "rollouts.jsonl.gz"
    fake_gz.write_text(good)  # not gzip
    with pytest.raises(SystemExit):
        B.main([str(fake_gz)])
    assert "cannot be read" in capsys.readouterr().err
    empty = tmp_path / "rollouts.jsonl"
    empty.write_text(json.dumps(_row(1, TRUE, 1.0, 0.0, task="vqa")) + "\n")
    with pytest.raises(SystemExit):
        B.main([str(empty)])
    assert "no detection completions" in capsys.readouterr().err
