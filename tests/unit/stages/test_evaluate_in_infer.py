"""Chunks scored in the infer tasks (segpipe/stages/infer.py chunk_scoring): the same evaluation as the evaluate
stage's own pass over the written mask, which then reads only the chunks the infer tasks did not score."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe.config import TilingConfig
from segpipe.errors import InputError
from segpipe.stages.evaluate import evaluate_image
from segpipe.stages.infer import chunk_scoring, infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import render
from segpipe.tiling import chunk_grid

HEIGHT, WIDTH, CHUNK = 70, 90, 32


def _plan(tmp_path: Path, truth: np.ndarray | None = None) -> tuple[BatchPlan, RunSettings]:
    image, labels = render(5, 5 + HEIGHT, 9, 9 + WIDTH, seed=3)
    tifffile.imwrite(tmp_path / "scan.tif", (image * 4000 + 100).astype(np.uint16))
    tifffile.imwrite(tmp_path / "truth.tif", (labels > 0).astype(np.uint8) if truth is None else truth)
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=CHUNK, tile=16))
    return plan_batch([str(tmp_path / "scan.tif")], [str(tmp_path / "truth.tif")], settings), settings


def test_scored_chunks_give_the_evaluation_of_the_written_mask(tmp_path: Path) -> None:
    plan, settings = _plan(tmp_path)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    inferred = infer_image(job, ingested, plan, settings.inference, evaluation=settings.evaluation)
    assert inferred.scored is not None
    assert inferred.scored.regions == frozenset(chunk_grid(HEIGHT, WIDTH, CHUNK))
    folded = evaluate_image(job, inferred.mask, plan, settings.evaluation, scored=inferred.scored)
    own_pass = evaluate_image(job, inferred.mask, plan, settings.evaluation)
    assert folded.evaluation == own_pass.evaluation
    np.testing.assert_array_equal(inferred.scored.confusion.sum(axis=0), own_pass.confusion)
    assert 0 < own_pass.confusion[1, 1] < own_pass.confusion.sum(), "both classes occur in truth and mask"


def test_a_resumed_infer_scores_nothing_and_the_evaluate_stage_reads_every_chunk(tmp_path: Path) -> None:
    plan, settings = _plan(tmp_path)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    infer_image(job, ingested, plan, settings.inference, evaluation=settings.evaluation)
    again = infer_image(job, ingested, plan, settings.inference, evaluation=settings.evaluation)
    assert again.chunks_computed == 0
    assert again.scored is not None
    assert again.scored.regions == frozenset()
    resumed = evaluate_image(job, again.mask, plan, settings.evaluation, scored=again.scored)
    assert resumed.evaluation == evaluate_image(job, again.mask, plan, settings.evaluation).evaluation


def test_a_truth_fault_leaves_its_chunk_to_the_evaluate_stage_which_reports_it(tmp_path: Path) -> None:
    """A label the model has no class for, in one chunk of a truth rewritten after the plan checked it:
    inference goes on, and the evaluate stage names the fault as it does without the scoring in infer."""
    plan, settings = _plan(tmp_path)
    truth = np.zeros((HEIGHT, WIDTH), np.uint8)
    truth[40, 50] = 9  # in chunk (32, 32) of the 32-pixel grid
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    job = plan.jobs[0]
    inferred = infer_image(job, ingest_image(job, plan), plan, settings.inference, evaluation=settings.evaluation)
    assert inferred.scored is not None
    unscored = set(chunk_grid(HEIGHT, WIDTH, CHUNK)) - inferred.scored.regions
    assert [(r.y0, r.x0) for r in unscored] == [(32, 32)]
    with pytest.raises(InputError) as own_pass:
        evaluate_image(job, inferred.mask, plan, settings.evaluation)
    with pytest.raises(InputError) as folded:
        evaluate_image(job, inferred.mask, plan, settings.evaluation, scored=inferred.scored)
    assert str(folded.value) == str(own_pass.value)
    assert "truth.tif" in str(folded.value)


def test_no_scoring_without_an_evaluation_or_for_a_truth_of_another_size(tmp_path: Path) -> None:
    plan, settings = _plan(tmp_path)
    job = plan.jobs[0]
    assert chunk_scoring(job, plan, None, (HEIGHT, WIDTH)) is None
    assert chunk_scoring(job, plan, settings.evaluation, (HEIGHT // 2, WIDTH // 2)) is None
    assert chunk_scoring(job, plan, settings.evaluation, (HEIGHT, WIDTH)) is not None
