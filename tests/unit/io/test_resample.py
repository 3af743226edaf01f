"""Area-average resampling of windows onto the model's grid (segpipe/io/resample.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.errors import ConfigError
from segpipe.io.resample import resample, resample_region, resampled_shape, source_region
from segpipe.tiling import Region, chunk_grid

RNG = np.random.default_rng(11)


def _block_mean(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    c, h, w = image.shape
    return image.reshape(c, h // fy, fy, w // fx, fx).mean(axis=(2, 4)).astype(np.float32)


@pytest.mark.parametrize(("fy", "fx"), [(2, 2), (4, 4), (3, 5), (1, 2), (8, 1)])
def test_a_whole_factor_is_exactly_the_block_mean(fy: int, fx: int) -> None:
    image = RNG.integers(0, 65535, (2, 120, 120)).astype(np.uint16)
    np.testing.assert_array_equal(resample(image, (float(fy), float(fx))), _block_mean(image, fy, fx))


def test_a_whole_factor_on_float_pixels_is_the_block_mean() -> None:
    image = RNG.normal(0, 1, (1, 64, 64))
    np.testing.assert_array_equal(resample(image, (4.0, 4.0)), image.reshape(1, 16, 4, 16, 4).mean(axis=(2, 4)))


def test_the_last_partial_block_averages_what_it_covers() -> None:
    image = np.arange(5 * 5, dtype=np.uint8).reshape(1, 5, 5)
    out = resample(image, (2.0, 2.0))
    assert out.shape == (1, 3, 3)
    assert out[0, 2, 2] == image[0, 4, 4]
    assert out[0, 0, 2] == image[0, :2, 4].mean()


@pytest.mark.parametrize("factor", [(2.0, 2.0), (4.0, 2.0), (3.0, 3.0)])
@pytest.mark.parametrize("chunk", [7, 16, 50])
def test_tiled_equals_whole_for_whole_factors(factor: tuple[float, float], chunk: int) -> None:
    image = RNG.integers(0, 255, (3, 97, 131)).astype(np.uint8)
    whole = resample(image, factor)
    tiled = np.zeros_like(whole)
    for target in chunk_grid(whole.shape[1], whole.shape[2], chunk):
        need = source_region(target, factor, 97, 131)
        data = image[:, need.y0 : need.y1, need.x0 : need.x1]
        tiled[:, target.y0 : target.y1, target.x0 : target.x1] = resample_region(data, need, target, factor, 97, 131)
    np.testing.assert_array_equal(tiled, whole)


@settings(deadline=None, max_examples=30)
@given(
    fy=st.floats(0.3, 6.0),
    fx=st.floats(0.3, 6.0),
    chunk=st.integers(3, 40),
)
def test_tiled_equals_whole_for_any_factor_up_to_rounding(fy: float, fx: float, chunk: int) -> None:
    image = RNG.integers(0, 255, (1, 61, 47)).astype(np.uint8)
    whole = resample(image, (fy, fx))
    for target in chunk_grid(whole.shape[1], whole.shape[2], chunk):
        need = source_region(target, (fy, fx), 61, 47)
        data = image[:, need.y0 : need.y1, need.x0 : need.x1]
        part = resample_region(data, need, target, (fy, fx), 61, 47)
        np.testing.assert_allclose(part, whole[:, target.y0 : target.y1, target.x0 : target.x1], rtol=1e-5)


def test_area_average_keeps_the_mean_of_a_non_integral_shrink() -> None:
    image = RNG.integers(0, 255, (1, 300, 300)).astype(np.uint8)
    assert float(resample(image, (2.5, 2.5)).mean()) == pytest.approx(float(image.mean()), rel=1e-6)


def test_enlarging_repeats_each_pixel() -> None:
    image = np.array([[[1, 2], [3, 4]]], dtype=np.uint8)
    np.testing.assert_array_equal(resample(image, (0.5, 0.5)), np.kron(image[0], np.ones((2, 2)))[None])


def test_nan_pixels_are_left_out_of_the_means() -> None:
    image = np.ones((1, 4, 4), dtype=np.float32)
    image[0, :2, :2] = np.nan
    image[0, 2, 2] = np.nan
    out = resample(image, (2.0, 2.0))
    assert np.isnan(out[0, 0, 0])
    np.testing.assert_array_equal(out[0].ravel()[1:], np.ones(3, np.float32))


def test_the_source_region_is_what_the_target_covers() -> None:
    assert source_region(Region(10, 20, 0, 5), (2.5, 4.0), 1000, 18) == Region(25, 50, 0, 18)
    assert resampled_shape(1001, 1000, (2.0, 2.0)) == (501, 500)


def test_too_little_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs level pixels"):
        resample_region(np.zeros((1, 4, 4)), Region(0, 4, 0, 4), Region(0, 4, 0, 4), (2.0, 2.0), 8, 8)


@pytest.mark.parametrize("factor", [(0.0, 1.0), (float("nan"), 1.0), (-2.0, 2.0)])
def test_bad_factors_are_refused(factor: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match="positive"):
        resampled_shape(10, 10, factor)
