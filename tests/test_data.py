import json
import warnings

import numpy as np
import pytest
from PIL import Image

import data
from data import Frame, RecordError, from_frame, to_frame


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def img_dir(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((120, 200, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "bad.png").write_bytes(b"not a png at all")
    return tmp_path


def good(**over):
    rec = {
        "id": "r1",
        "task": "grounding",
        "images": ["images/a.png"],
        "question": "Where is the ship?",
        "answer": [[10, 10, 50, 40]],
    }
    rec.update(over)
    return rec


@pytest.mark.parametrize(
    "row, field, words",
    [
        ('{"id": "x", "task": ', None, "bad JSON"),
        (good(task="segmentation"), "task", "unknown task"),
        (good(images=["images/missing.png"]), "images", "not found"),
        (good(images=["images/bad.png"]), "images", "unreadable"),
        (good(task="counting", answer="three"), "answer", "integer"),
        (good(task="multilabel", answer="ship"), "answer", "list"),
        (good(answer=[[50, 10, 10, 40]]), "answer", "x2<=x1"),
        (good(answer=[[10, 10, 250, 40]]), "answer", "outside"),
        (good(answer=[[1, 2, 3, 4], [5, 6, 7, 8]]), "answer", "exactly one box"),
        (good(question="   "), "question", "empty"),
        (good(task="change_caption", answer="a new road"), "images", "2..2"),
        ({k: v for k, v in good().items() if k != "answer"}, "answer", "missing"),
    ],
)
def test_validation_errors_name_file_line_and_field(img_dir, row, field, words):
    path = write_jsonl(img_dir / "d.jsonl", [good(), good(id="r2"), row])
    with pytest.raises(RecordError) as e:
        data.load_records(path)
    msg = str(e.value)
    assert f"{path}:3" in msg and words in msg
    if field:
        assert field in msg


def test_skip_bad_reports_count_and_reasons(img_dir, caplog, capsys):
    path = write_jsonl(img_dir / "d.jsonl", [good(), "{oops", good(task="nope"), good(id="r4")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a warning that echoes the caller's source line
        recs = data.load_records(path, skip_bad=True)
    assert [r.id for r in recs] == ["r1", "r4"]
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "skipped 2 bad line(s)" in message
    assert ":2: bad JSON" in message and ":3: field 'task'" in message
    assert "load_records(" not in capsys.readouterr().err


def test_a_cut_line_is_reported_at_its_column(img_dir):
    path = write_jsonl(img_dir / "d.jsonl", ['{"id": "x", "task": "vqa"'])
    with pytest.raises(RecordError, match=r"d\.jsonl:1: bad JSON \(Expecting ',' delimiter, column 26\)"):
        data.load_records(path)


def test_duplicate_ids_are_reported_with_both_lines(img_dir, caplog):
    rows = [good(id="a"), good(id="b"), good(id="a"), good(id="c"), good(id="b")]
    path = write_jsonl(img_dir / "d.jsonl", rows)
    assert [r.id for r in data.load_records(path)] == ["a", "b", "a", "c", "b"]  # kept: a warning, no error
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "2 duplicate id(s)" in message
    assert f"{path}:3: id 'a' is also the id of line 1" in message
    assert f"{path}:5: id 'b' is also the id of line 2" in message
    caplog.clear()
    data.load_records(write_jsonl(img_dir / "u.jsonl", [good(id="a"), good(id="b")]))
    assert not caplog.records


def test_record_fields_and_normalisation(img_dir):
    path = write_jsonl(
        img_dir / "d.jsonl", [good(answer=[10, 10, 50, 40]), good(task="caption", answer="a port")]
    )
    g, c = data.load_records(path)
    assert g.answer == [[10, 10, 50, 40]] and g.image_sizes == [(200, 120)] and g.source.endswith("d.jsonl:1")
    assert c.answer == ["a port"] and g.images[0].startswith(str(img_dir))


@pytest.mark.parametrize("kind", data.FRAME_KINDS)
@pytest.mark.parametrize("size", [(200, 120), (333, 171), (401, 239), (28, 28), (1000, 17)])
def test_frame_round_trip(kind, size):
    ms = (size[0] // 28 * 28 + 28, max(28, size[1] // 28 * 28))
    f = Frame(kind, size, ms)
    box = [size[0] * 0.13, size[1] * 0.27, size[0] * 0.81, size[1] * 0.9, 30.0]
    back = from_frame(to_frame(box, f), f)
    assert back == pytest.approx(box, rel=1e-9, abs=1e-9)
    full = to_frame([0, 0, size[0], size[1]], f)
    expect = {"pixels": ms, "0-1000": (1000, 1000), "0-100": (100, 100)}[kind]
    assert full == pytest.approx([0, 0, *expect])


def test_frame_rejects_unknown_kind():
    with pytest.raises(ValueError):
        Frame("0-1", (10, 10), (28, 28))


def test_model_frame_matches_processor_resize(tiny, synth_dir):
    recs = data.load_records(synth_dir / "test.jsonl")[:6]
    batch = data.collate_prompts(recs, tiny.processor, tiny.frame_kind)  # raises if frames disagree
    for r, f in zip(recs, batch.frames):
        assert f.image_size == r.image_sizes[0]
        assert f.model_size[0] % 28 == 0 and f.model_size[1] % 28 == 0


def test_sft_labels_are_exactly_the_assistant_text(tiny, synth_dir):
    recs = data.load_records(synth_dir / "train.jsonl")[:12]
    batch = data.collate_sft(recs, tiny.processor, tiny.frame_kind)
    tok = tiny.processor.tokenizer
    for i, r in enumerate(recs):
        frame = data.frames_of(r, tiny.frame_kind, tiny.processor.image_processor)[0]
        lab = batch["labels"][i]
        assert tok.decode(lab[lab != -100]) == data.target_text(r, frame) + "<|im_end|>"
        # everything before the target is the prompt, unlabelled
        first = int((lab != -100).nonzero()[0])
        prompt = tok.decode(batch["input_ids"][i][:first])
        assert prompt.endswith("<|im_start|>assistant\n") and r.question.split("{")[0] in prompt


def test_messages_label_multiple_images(synth_dir):
    recs = [r for r in data.load_records(synth_dir / "train.jsonl") if r.task == "change_caption"]
    f = [Frame("pixels", s, s) for s in recs[0].image_sizes]
    content = data.to_messages(recs[0], f)[1]["content"]
    texts = [c.get("text") for c in content]
    assert texts[0] == "Image 1: " and texts[2] == "Image 2: " and content[1]["type"] == "image"
