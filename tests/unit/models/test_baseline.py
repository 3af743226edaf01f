"""The classical baseline: threshold the band mean, open with a disk; exact under tiling when the threshold is
fixed, and a useful Dice on the synthetic nuclei sample."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from segpipe import normalize
from segpipe.errors import ModelError
from segpipe.models import load_predictor, resolve_model
from segpipe.models.backends.baseline import DEFAULT_THRESHOLD, LOGIT, OPENING_RADIUS, disk, otsu_threshold
from segpipe.synthetic import write_sample
from tests.unit.helpers import trim_windows

from ..helpers import whole_image_labels


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Foreground Dice ``2 |P & T| / (|P| + |T|)``."""
    return float(2 * np.sum(predicted & truth) / (predicted.sum() + truth.sum()))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic nuclei sample (512 x 512), percentile-normalised as the pipeline does, and its truth."""
    image_path, truth_path = write_sample(tmp_path_factory.mktemp("baseline"), 512, seed=0)
    image = tifffile.imread(image_path)[np.newaxis]
    normalised = normalize.apply(image, normalize.BandStats.from_samples(image))
    return normalised, tifffile.imread(truth_path) == 1


def test_baseline_card_declares_its_receptive_field() -> None:
    ref = resolve_model("baseline")
    reach = 2 * OPENING_RADIUS
    assert ref.format == "baseline"
    assert ref.card.class_names == ("background", "foreground")
    assert (ref.card.receptive_field, ref.card.halo, ref.card.size_divisor) == (reach, reach, 1)
    assert ref.card.normalization == "percentile"
    assert ref.card.in_channels is None
    assert ref.card.architecture["threshold"] == DEFAULT_THRESHOLD
    assert ref.assumptions == ()


def test_otsu_baseline_says_it_is_per_tile() -> None:
    ref = resolve_model("baseline:otsu")
    assert ref.card.receptive_field is None
    assert ref.card.architecture["threshold"] is None
    assert "computed per tile" in ref.assumptions[0]
    assert ref.sha256 != resolve_model("baseline").sha256 != resolve_model("baseline:0.4").sha256


def test_unknown_baseline_option_is_refused() -> None:
    with pytest.raises(ModelError, match="baseline:median: unknown baseline"):
        resolve_model("baseline:median")


def test_logits_are_two_classes_and_average_the_bands() -> None:
    predictor = load_predictor(resolve_model("baseline", channels=3), "cpu")
    batch = np.zeros((1, 3, 20, 20), np.float32)
    batch[0, 0, 5:15, 5:15] = 3 * (DEFAULT_THRESHOLD + 0.01)  # band mean just above the threshold
    logits = predictor(batch)
    assert logits.shape == (1, 2, 20, 20)
    assert np.all(logits[0, 0] == 0), "background logits must all be 0"
    assert set(np.unique(logits[0, 1])) == {-LOGIT, LOGIT}
    expected = ndimage.binary_opening(batch[0].mean(axis=0) > DEFAULT_THRESHOLD, structure=disk(OPENING_RADIUS))
    np.testing.assert_array_equal(logits[0].argmax(axis=0) == 1, expected)


def test_opening_removes_specks_smaller_than_the_disk() -> None:
    predictor = load_predictor(resolve_model("baseline"), "cpu")
    batch = np.zeros((1, 1, 16, 16), np.float32)
    batch[0, 0, 3:5, 3:5] = 1.0  # 2 x 2: smaller than a radius-2 disk
    assert predictor(batch)[0].argmax(axis=0).sum() == 0


def test_otsu_threshold_splits_two_modes() -> None:
    low, high = np.random.default_rng(0).normal([[0.1], [0.7]], 0.02, (2, 400))
    threshold = otsu_threshold(np.concatenate([low, high]))
    assert low.max() <= threshold < high.min()
    assert otsu_threshold(np.full(10, 0.3)) == pytest.approx(0.3)


def test_fixed_threshold_tiles_exactly_like_the_whole_image(sample: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = sample
    crop = image[:, 100:230, 50:197]  # awkward sizes: tiles of 40 do not divide them
    predictor = load_predictor(resolve_model("baseline"), "cpu")
    halo = predictor.card.default_halo
    window = np.pad(crop, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    tiled = trim_windows(predictor, window, halo, 40, 4).argmax(axis=0)
    np.testing.assert_array_equal(tiled, whole_image_labels(predictor, crop, halo, None))


@pytest.mark.parametrize(("spec", "at_least"), [("baseline", 0.8), ("baseline:otsu", 0.85)])
def test_baseline_segments_the_synthetic_sample(
    sample: tuple[np.ndarray, np.ndarray], spec: str, at_least: float
) -> None:
    """Dice on the 512 x 512 sample, tiled as the pipeline tiles it (measured: baseline 0.855, otsu 0.895)."""
    image, truth = sample
    predictor = load_predictor(resolve_model(spec, channels=1), "cpu")
    halo = predictor.card.default_halo
    window = np.pad(image, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    labels = trim_windows(predictor, window, halo, 128, 8).argmax(axis=0)
    assert dice(labels == 1, truth) > at_least
