"""The evaluation result (segpipe/stages/evaluate.py): its JSON form and back."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from segpipe.metrics import scores
from segpipe.stages.evaluate import Evaluation


def evaluation(objects: bool = False) -> Evaluation:
    whole = scores(np.array([[5, 1, 0], [2, 7, 0], [0, 1, 4]]))
    rows = [{"threshold": 0.5, "tp": 3, "fp": 1, "fn": 0, "f1": 0.857}] if objects else None
    return Evaluation(whole, scores(np.array([[3, 0, 0], [1, 5, 0], [0, 0, 4]])).band(), whole.band(), rows, objects)


def test_an_evaluation_round_trips_through_json() -> None:
    excluded = replace(evaluation(), background_pixels_excluded=1234)
    for value in (evaluation(), evaluation(objects=True), excluded):
        text = json.dumps(value.to_json())
        assert Evaluation.from_json(json.loads(text)) == value


def test_the_json_form_keeps_the_scores_at_the_top_level() -> None:
    data = evaluation().to_json()
    assert list(data)[:3] == ["iou", "dice", "precision"]
    assert list(data)[-2:] == ["interior", "seam_band"]
    assert "objects" not in data  # object matching was not asked for
    assert "background_pixels_excluded" not in data  # no foreground: the form of a run without one
    assert evaluation(objects=True).to_json()["objects"][0]["tp"] == 3


def test_an_absent_class_is_null_in_json_and_nan_back() -> None:
    value = scores(np.array([[4, 0], [0, 0]]))
    data = value.to_json()
    assert data["iou"][1] is None
    assert np.isnan(type(value).from_json(data).iou[1])
