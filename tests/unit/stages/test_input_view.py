"""What of an input the model reads: bands, level and resampling, foreground chunks (segpipe/stages/view.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.errors import ConfigError
from segpipe.io.bands import parse_bands, select_bands
from segpipe.io.images import open_image
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.stages.view import InputView, background_tiles_of, copied_chunks, copied_parts
from segpipe.tiling import Region, tiles_in

GDAL_NODATA = 42113


def _scene(path: Path) -> np.ndarray:
    """A 4-band uint16 scene of 256 x 256: a nodata (0) collar around a 60 x 60 footprint with a bright square."""
    rng = np.random.default_rng(3)
    data = np.zeros((4, 256, 256), np.uint16)
    data[:, 100:160, 100:160] = 1000 + rng.integers(0, 20, (4, 60, 60))
    data[0, 100:160, 100:160] = 60000  # band 1: not the model's
    data[2, 115:145, 115:145] = 3000  # band 3: the object
    tifffile.imwrite(path, data, photometric="minisblack", extratags=[(GDAL_NODATA, "s", 0, "0", True)])
    return data


def test_parse_and_select_bands(tmp_path: Path) -> None:
    _scene(tmp_path / "s.tif")
    source = open_image(tmp_path / "s.tif")
    picked = select_bands(source, parse_bands("3,1"))
    assert picked.shape == (2, 256, 256)
    assert np.array_equal(picked.read(100, 101, 100, 102)[1], source.read(100, 101, 100, 102)[0])


def test_a_band_list_that_is_not_numbers_is_refused() -> None:
    with pytest.raises(ConfigError, match="--bands 'red': give 1-based band numbers"):
        parse_bands("red")


@pytest.mark.parametrize(("bands", "message"), [((4, 4), "band 4 is given twice"), ((0,), "bands are numbered from 1")])
def test_bad_band_lists_are_refused_naming_the_file(tmp_path: Path, bands: tuple[int, ...], message: str) -> None:
    _scene(tmp_path / "s.tif")
    with pytest.raises(ConfigError, match=f"s.tif: bands: {message}"):
        select_bands(open_image(tmp_path / "s.tif"), bands)


def test_band_out_of_range_names_the_file(tmp_path: Path) -> None:
    _scene(tmp_path / "s.tif")
    with pytest.raises(ConfigError, match=r"s.tif: band 5 does not exist \(the image has bands 1..4\)"):
        select_bands(open_image(tmp_path / "s.tif"), (5,))


def test_bands_enter_the_ingest_key_only_when_set(tmp_path: Path) -> None:
    _scene(tmp_path / "s.tif")
    plain = plan_batch([str(tmp_path / "s.tif")], None, RunSettings(model="baseline", out=str(tmp_path / "o")))
    again = plan_batch([str(tmp_path / "s.tif")], None, RunSettings(model="baseline", out=str(tmp_path / "o")))
    picked = RunSettings(model="baseline", out=str(tmp_path / "o"), bands=(3,))
    banded = plan_batch([str(tmp_path / "s.tif")], None, picked)
    assert plain.jobs[0].ingest_key == again.jobs[0].ingest_key
    assert banded.jobs[0].ingest_key != plain.jobs[0].ingest_key
    assert banded.jobs[0].grid == (1, 256, 256)


def _pyramid(path: Path, size: int = 128) -> np.ndarray:
    """A single-band OME-TIFF at 0.25 um with a 2x-reduced SubIFD level."""
    rng = np.random.default_rng(1)
    base = np.zeros((size, size), np.uint16)
    base[20:90, 30:100] = 2000
    base += rng.integers(0, 50, base.shape).astype(np.uint16)
    meta = {"axes": "YX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeXUnit": "µm"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(base, subifds=1, metadata=meta, tile=(32, 32))
        tif.write(base[::2, ::2], subfiletype=1, tile=(32, 32))
    return base


def test_level_and_factor_from_a_pixel_size_override(tmp_path: Path) -> None:
    base = _pyramid(tmp_path / "p.ome.tif")
    settings = RunSettings(model="baseline", out=str(tmp_path / "o"), level=0, pixel_size="0.25um")
    plan = plan_batch([str(tmp_path / "p.ome.tif")], None, settings)
    assert plan.jobs[0].grid == (1, *base.shape)


def _resampled_run(tmp_path: Path, chunk: int, name: str) -> np.ndarray:
    from dataclasses import replace

    from segpipe.config import TilingConfig

    settings = RunSettings(model="baseline", out=str(tmp_path / name), tiling=TilingConfig(chunk=chunk, tile=chunk))
    plan = plan_batch([str(tmp_path / "p.ome.tif")], None, settings)
    card = replace(plan.model.card, pixel_size=1.0, unit="um")  # 4x coarser than level 0: level 1, factor 2
    plan = replace(plan, model=replace(plan.model, card=card))
    from segpipe.stages.plan import _jobs

    jobs = _jobs([open_image(tmp_path / "p.ome.tif")], None, str(tmp_path / name), "input", plan, settings)
    job = jobs[0]
    assert job.view.level == 1
    assert job.view.factor == (2.0, 2.0)
    ingested = ingest_image(job, plan)
    infer_image(job, ingested, plan, settings.inference)
    return np.asarray(zarr.open_array(job.mask, mode="r")[:])


def test_resampled_grid_tiled_equals_whole(tmp_path: Path) -> None:
    _pyramid(tmp_path / "p.ome.tif")
    whole = _resampled_run(tmp_path, 64, "whole")
    tiled = _resampled_run(tmp_path, 8, "tiled")
    assert whole.shape == (32, 32)
    assert np.array_equal(whole, tiled)


def test_card_pixel_size_on_an_image_without_one_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    from segpipe.stages.plan import _jobs

    tifffile.imwrite(tmp_path / "plain.tif", np.ones((32, 32), np.uint16))
    settings = RunSettings(model="baseline", out=str(tmp_path / "o"))
    plan = plan_batch([str(tmp_path / "plain.tif")], None, settings)
    plan = replace(plan, model=replace(plan.model, card=replace(plan.model.card, pixel_size=0.5, unit="um")))
    with pytest.raises(ConfigError, match="plain.tif: the model expects 0.5 um pixels but the image declares no"):
        _jobs([open_image(tmp_path / "plain.tif")], None, str(tmp_path / "o"), "input", plan, settings)


def test_foreground_chunks_and_what_ingest_copies(tmp_path: Path) -> None:
    _scene(tmp_path / "s.tif")
    from segpipe.config import TilingConfig

    settings = RunSettings(
        model="baseline", out=str(tmp_path / "o"), foreground="nodata", tiling=TilingConfig(chunk=64, tile=64)
    )
    plan = plan_batch([str(tmp_path / "s.tif")], None, settings)
    view = plan.jobs[0].view
    assert view.chunks is not None
    assert len(view.chunks) == 4
    assert view.foreground_fraction == pytest.approx(3600 / 65536)
    copied = copied_chunks(view, (256, 256), 64, plan.halo)
    assert copied is not None
    assert len(copied) == 16  # the halo of a computed chunk reaches each of its neighbours


def test_ingest_copies_only_what_computed_tiles_read() -> None:
    """Foreground in the top-left tile of chunk (0, 0) only: chunk (0, 0) copies that tile and its halo, the
    chunk to its right a strip of halo width, the chunk below one of halo height, and the diagonal a corner."""
    mask = np.zeros((64, 64), bool)
    mask[2:6, 2:6] = True
    view = InputView(chunks=frozenset({Region(0, 32, 0, 32)}), foreground_mask=mask)
    background = background_tiles_of(view, "trim", 16, 4)
    assert background == {Region(0, 32, 0, 32): frozenset(tiles_in(Region(0, 32, 0, 32), 16)) - {Region(0, 16, 0, 16)}}
    parts = copied_parts(view, (64, 64), 32, 4, background, 16)
    assert parts == {Region(0, 32, 0, 32): Region(0, 20, 0, 20)}  # the tile's halo does not reach chunk (0, 32)
    whole_chunks = copied_parts(view, (64, 64), 32, 4)
    assert whole_chunks is not None
    assert whole_chunks[Region(0, 32, 32, 64)] == Region(0, 32, 32, 36)
    assert whole_chunks[Region(32, 64, 32, 64)] == Region(32, 36, 32, 36)
    assert background_tiles_of(view, "gaussian", 16, 4) == {}


def test_card_fields_parse_and_old_cards_keep_their_key() -> None:
    from segpipe.models.card import ModelCard
    from segpipe.stages.fingerprints import _card_part

    card = ModelCard.from_dict({"name": "m", "in_channels": 3, "num_classes": 2, "pixel_size": "500nm"})
    assert (card.pixel_size, card.unit) == (500.0, "nm")
    numeric = ModelCard.from_dict(
        {"name": "m", "in_channels": 3, "num_classes": 2, "pixel_size": 0.5, "unit": "um", "tolerance": 0.1}
    )
    assert str(numeric.model_pixel_size) == "0.5 um"
    old = ModelCard.from_dict({"name": "m", "in_channels": 3, "num_classes": 2})
    assert "pixel_size" not in _card_part(old.to_dict())
    with pytest.raises(ConfigError, match="0 is not a positive pixel size"):
        ModelCard.from_dict({"name": "m", "in_channels": 3, "num_classes": 2, "pixel_size": 0})


def test_geotiff_tags_and_ngff_scale_follow_the_grid() -> None:
    from segpipe.io.export import scaled_geotiff_tags
    from segpipe.stages.view import InputView
    from segpipe.units import PixelSize

    tags = [[33550, 12, 3, [10.0, 10.0, 0.0]], [33922, 12, 6, [0.0, 0.0, 0.0, 5000.0, 9000.0, 0.0]]]
    scaled = scaled_geotiff_tags(tags, (2.0, 2.0))
    assert scaled[0][3] == [20.0, 20.0, 0.0]
    assert scaled[1][3] == [0.0, 0.0, 0.0, 5000.0, 9000.0, 0.0]
    view = InputView(level=1, factor=(2.0, 2.0), scale=(4.0, 4.0), pixel_size=PixelSize(1.0, 1.0, "um"))
    assert view.ngff_pixel_size([0.25, 0.25], "micrometer") == ([1.0, 1.0], "micrometer")
    assert InputView().ngff_pixel_size([0.25, 0.25], "micrometer") == ([0.25, 0.25], "micrometer")
