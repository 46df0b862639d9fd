"""scripts/ladder_where.py: where a predicted box lies against a two-object scene's two objects."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def W():
    from conftest import script

    return script("ladder_where")


def test_the_other_object_is_found_from_the_pixels(W):
    for stage in ("square2", "colourmixl"):
        for i in range(6):
            s = W.curriculum.BUILDERS[stage](np.random.default_rng([90210, 2000, i]), "grounding")
            other = W.other_object(stage, s.images[0], s.answer[0])
            assert other is not None and other != list(s.answer[0])
            assert W.placement(other, s.answer[0], other, 224)["iou_other"] == 1.0
    alone = W.curriculum.square(np.random.default_rng(0), "grounding")
    assert W.other_object("square2", alone.images[0], alone.answer[0]) is None


def test_placement_and_summary(W):
    target, other = [0, 0, 56, 56], [112, 112, 168, 168]
    on_target = W.placement(target, target, other, 224)
    between = W.placement([56, 56, 112, 112], target, other, 224)
    assert on_target["iou_target"] == 1.0 and on_target["to_target"] == 0.0 and on_target["iou_other"] == 0.0
    assert between["to_midpoint"] == 0.0 and between["to_image_centre"] == pytest.approx(28 * np.sqrt(2))
    s = W.summary([on_target, between])
    assert s["parsed"] == 2 and s["hit_target@0.5"] == 0.5 and s["hit_other@0.5"] == 0.0
    assert s["nearer_target"] == 0.5  # the box between them is as near to both
    assert s["mean_px_to_midpoint"] == pytest.approx(on_target["to_midpoint"] / 2)


def test_a_path_that_is_not_a_model_is_one_line(W, tmp_path, capsys):
    with pytest.raises(SystemExit):
        W.main([str(tmp_path), "square2"])
    assert "not a model folder" in capsys.readouterr().err
