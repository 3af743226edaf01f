"""The objects stage (segpipe/stages/objects.py) on a finalized store: the id image equals scipy's labelling of
the whole mask, the table equals regionprops, the polygons are whole across chunk borders, resumes skip done
chunks, and the outputs carry the input's georeferencing."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import replace

import geopandas
import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr
from scipy import ndimage
from skimage.measure import regionprops_table

from segpipe import offload
from segpipe.chunk_inference import create_mask
from segpipe.config import ObjectsConfig, TilingConfig
from segpipe.errors import ConfigError
from segpipe.executor import local_executor
from segpipe.io.omezarr import level_count
from segpipe.objects.grid import blocks_of
from segpipe.stages import objects as objects_stage
from segpipe.stages.finalize import finalize_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.objects import Counted, count_objects
from segpipe.stages.plan import BatchPlan, ImageJob, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.storage import location

HEIGHT, WIDTH, CHUNK = 300, 220, 64
GEO_TAGS = {33550: (10.0, 10.0, 0.0), 33922: (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)}
GEOKEYS = (1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32633)  # projected, EPSG:32633


def _mask(seed: int) -> np.ndarray:
    """Blobs of random size, many crossing chunk borders, some with holes."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((HEIGHT, WIDTH)), 3)
    return (noise > np.quantile(noise, 0.7)).astype(np.uint8)


def _finalized(tmp_path, mask: np.ndarray, geotiff: bool = False, model: str = "builtin") -> tuple[ImageJob, BatchPlan]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, (HEIGHT, WIDTH)).astype(np.uint16)
    extratags = [(33550, 12, 3, GEO_TAGS[33550], True), (33922, 12, 6, GEO_TAGS[33922], True)]
    extratags.append((34735, 3, len(GEOKEYS), GEOKEYS, True))
    tifffile.imwrite(tmp_path / "scene.tif", image, extratags=extratags if geotiff else ())
    settings = replace(RunSettings(out=str(tmp_path / "out"), model=model), tiling=TilingConfig(chunk=CHUNK, tile=64))
    plan = plan_batch([str(tmp_path / "scene.tif")], None, settings)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    create_mask(job.mask, HEIGHT, WIDTH, plan.chunk, plan.model.card.num_classes)
    zarr.open_array(job.mask, mode="r+")[:] = mask
    finalize_image(job, plan, ingested.stats)
    return job, plan


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageJob, np.ndarray, Counted]:
    tmp_path = tmp_path_factory.mktemp("objects")
    mask = _mask(3)
    job, plan = _finalized(tmp_path, mask, geotiff=True)
    return job, mask, count_objects(job, plan, ObjectsConfig(enabled=True, geojson=True))


def _table(url: str):
    return pq.read_table(io.BytesIO(location(url).read_bytes()))


def test_the_id_image_is_scipys_labelling_of_the_whole_mask(counted) -> None:
    _, mask, result = counted
    expected, count = ndimage.label(mask == 1)
    np.testing.assert_array_equal(zarr.open_array(result.labels, mode="r")[:], expected)
    assert result.counts == (0, count)


def test_the_table_equals_regionprops_on_the_whole_image(counted) -> None:
    _, mask, result = counted
    ids, _ = ndimage.label(mask == 1)
    table = _table(result.table)
    props = regionprops_table(ids, properties=("label", "area", "perimeter", "centroid"))
    np.testing.assert_array_equal(table.column("object_id").to_numpy(), props["label"])
    np.testing.assert_array_equal(table.column("area").to_numpy(), props["area"])
    np.testing.assert_allclose(table.column("perimeter").to_numpy(), props["perimeter"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(table.column("centroid_row").to_numpy(), props["centroid-0"], atol=1e-9)


def test_the_median_area_is_the_tables(counted) -> None:
    _, _, result = counted
    assert result.median_areas[1] == float(np.median(_table(result.table).column("area").to_numpy()))


def test_each_object_is_one_polygon_whose_area_is_its_pixels_in_map_units(counted) -> None:
    _, _, result = counted
    frame = geopandas.read_parquet(io.BytesIO(location(result.polygons).read_bytes()))
    areas = _table(result.table).column("area").to_numpy()
    assert frame.crs is not None
    assert frame.crs.to_epsg() == 32633
    assert len(frame) == len(areas)
    np.testing.assert_allclose(frame.geometry.area.to_numpy(), areas * 100.0)  # 10 m pixels


def test_map_centroids_follow_the_geotiff_transform(counted) -> None:
    _, _, result = counted
    table = _table(result.table)
    col, row = table.column("centroid_col").to_numpy(), table.column("centroid_row").to_numpy()
    np.testing.assert_allclose(table.column("centroid_x_map").to_numpy(), 500000.0 + (col + 0.5) * 10.0)
    np.testing.assert_allclose(table.column("centroid_y_map").to_numpy(), 4000000.0 - (row + 0.5) * 10.0)


def test_the_geojson_has_one_classified_detection_per_object(counted) -> None:
    import json

    _, _, result = counted
    assert result.geojson is not None
    features = json.loads(location(result.geojson).read_bytes())["features"]
    assert len(features) == result.counts[1]
    assert {f["properties"]["classification"]["name"] for f in features} == {"nucleus"}


def test_labels_list_the_objects_image_with_its_pyramid(counted) -> None:
    job, _, _ = counted
    labels = zarr.open_group(location(job.store).child("labels").url, mode="r")
    assert labels.attrs["ome"]["labels"] == ["mask", "objects"]
    datasets = labels["objects"].attrs["ome"]["multiscales"][0]["datasets"]
    levels = level_count(HEIGHT, WIDTH)
    assert [d["path"] for d in datasets] == [str(n) for n in range(levels)]
    assert levels > 1
    top = zarr.open_array(location(job.store).child("labels", "objects", str(levels - 1)).url, mode="r")
    assert top.dtype == np.uint32


def test_the_table_is_the_same_bytes_from_sums_over_blocks_of_four_chunks(tmp_path, monkeypatch) -> None:
    mask = _mask(3)
    job, plan = _finalized(tmp_path, mask)
    per_chunk = location(count_objects(job, plan, ObjectsConfig(enabled=True)).table).read_bytes()
    monkeypatch.setattr(objects_stage, "SUMS_TASKS_PER_SLOT", 0)  # 2 x 2 chunks per sums block at any size
    sizes: list[int] = []

    def recording(tasks, label=""):
        sizes.append(len(tasks))
        return local_executor(tasks, label)

    grouped = count_objects(job, plan, ObjectsConfig(enabled=True), recording)
    chunks = -(-HEIGHT // CHUNK) * -(-WIDTH // CHUNK)
    assert -(-HEIGHT // (2 * CHUNK)) * -(-WIDTH // (2 * CHUNK)) in sizes  # the sums pass, grouped
    assert sizes.count(chunks) >= 2  # borders and outlines, per chunk
    assert location(grouped.table).read_bytes() == per_chunk


def test_polygons_traced_in_child_processes_are_the_same_bytes(tmp_path, monkeypatch) -> None:
    mask = _mask(3)
    job, plan = _finalized(tmp_path, mask)
    here = location(count_objects(job, plan, ObjectsConfig(enabled=True)).polygons).read_bytes()
    monkeypatch.setattr(offload, "processes", lambda: 2)
    monkeypatch.setattr(objects_stage, "OFFLOAD_MIN_CHUNKS", 0)  # any image's polygons traced apart
    children: set[int] = set()
    real_run = offload.run

    def recorded(fn, *args):
        children.add(real_run(os.getpid))
        return real_run(fn, *args)

    monkeypatch.setattr(offload, "run", recorded)
    apart = location(count_objects(job, plan, ObjectsConfig(enabled=True)).polygons).read_bytes()
    assert children
    assert os.getpid() not in children
    assert apart == here


def test_tracing_warns_of_nothing(tmp_path) -> None:
    """rasterio warns of the identity transform it is given for pixel coordinates; a tracing child process has
    nothing to route that warning, so it would reach the user's terminal."""
    from rasterio.errors import NotGeoreferencedWarning

    job, plan = _finalized(tmp_path, _mask(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        assert count_objects(job, plan, ObjectsConfig(enabled=True)).counts[1] > 0


def test_sums_blocks_group_four_chunks_only_while_every_slot_keeps_four_tasks() -> None:
    mask = np.zeros((8 * CHUNK, 8 * CHUNK), np.uint8)  # 64 chunks, 16 blocks of 2 x 2
    assert len(objects_stage._sums_grid(mask, blocks_of(mask, (CHUNK, CHUNK)), CHUNK, 4)) == 16
    assert len(objects_stage._sums_grid(mask, blocks_of(mask, (CHUNK, CHUNK)), CHUNK, 5)) == 64


def test_a_resumed_run_relabels_only_the_chunks_not_marked_done(tmp_path) -> None:
    mask = _mask(5)
    job, plan = _finalized(tmp_path, mask)
    first = count_objects(job, plan, ObjectsConfig(enabled=True))
    expected = np.asarray(zarr.open_array(first.labels, mode="r")[:])
    ledger = next(n for n in location(job.store).child(".segpipe").listdir() if n.startswith("objects-"))
    markers = location(job.store).child(".segpipe", ledger)
    lost = sorted(markers.listdir())[:3]  # as if the run died before these chunks were written
    ids = zarr.open_array(first.labels, mode="r+")
    for name in lost:
        y, x = (int(v) for v in name.split("_"))
        ids[y : y + CHUNK, x : x + CHUNK] = 0
        markers.child(name).remove()
    batches: list[int] = []

    def recording(tasks, label=""):
        batches.append(len(tasks))
        return local_executor(tasks, label)

    second = count_objects(job, plan, ObjectsConfig(enabled=True), recording)
    assert batches[1] == len(lost)  # the relabel pass: only the chunks not marked done
    np.testing.assert_array_equal(zarr.open_array(second.labels, mode="r")[:], expected)
    assert second.counts == first.counts


def test_eight_connectivity_joins_diagonal_neighbours(tmp_path) -> None:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[CHUNK - 1, CHUNK - 1] = mask[CHUNK, CHUNK] = 1  # diagonal across a chunk corner
    job, plan = _finalized(tmp_path, mask)
    assert count_objects(job, plan, ObjectsConfig(enabled=True, connectivity=8)).counts == (0, 1)


def test_a_connectivity_other_than_4_or_8_is_one_line() -> None:
    with pytest.raises(ConfigError, match="--connectivity must be 4 or 8, got 6"):
        ObjectsConfig(enabled=True, connectivity=6)


def _boundary_mask(seed: int) -> np.ndarray:
    """Touching blobs as a boundary model sees them: interior cores inside boundary rims, many across chunks."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((HEIGHT, WIDTH), np.int32)
    seeds[rng.integers(0, HEIGHT, 60), rng.integers(0, WIDTH, 60)] = np.arange(1, 61)
    blobs = ndimage.grey_dilation(seeds, size=15)
    rims = (ndimage.grey_dilation(blobs, size=5) != blobs) | (ndimage.grey_erosion(blobs, size=5) != blobs)
    return np.where(blobs > 0, np.where(rims, 2, 1), 0).astype(np.uint8)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageJob, np.ndarray, Counted]:
    tmp_path = tmp_path_factory.mktemp("boundary")
    mask = _boundary_mask(2)
    job, plan = _finalized(tmp_path, mask, model="builtin:boundary")
    return job, mask, count_objects(job, plan, ObjectsConfig(enabled=True))


def test_a_boundary_models_objects_are_its_interiors_grown_as_on_the_whole_image(grown) -> None:
    from segpipe.models.backends.builtin import BOUNDARY_CARD
    from segpipe.models.card import ModelCard
    from segpipe.objects.grow import grow_ids

    _, mask, result = grown
    interior, _ = ndimage.label(mask == 1)
    rule = ModelCard.from_json(BOUNDARY_CARD).instances
    assert rule is not None
    expected = grow_ids(interior.astype(np.uint32), mask, rule)
    np.testing.assert_array_equal(zarr.open_array(result.labels, mode="r")[:], expected)


def test_a_boundary_models_objects_split_touching_blobs(grown) -> None:
    _, mask, result = grown
    merged, _ = ndimage.label(mask > 0)
    assert result.counts[1] > merged.max()


def test_a_boundary_models_objects_are_all_of_the_interior_class(grown) -> None:
    _, _, result = grown
    assert result.counts[2] == 0
    assert set(_table(result.table)["class"].to_pylist()) == {1}


def test_a_boundary_models_table_measures_the_grown_objects(grown) -> None:
    _, _, result = grown
    ids = np.asarray(zarr.open_array(result.labels, mode="r")[:])
    table = _table(result.table)
    np.testing.assert_array_equal(table["area"].to_numpy(), np.bincount(ids.ravel())[1:])


@pytest.fixture(scope="module")
def speckled(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Counted]:
    """The boundary mask with single interior pixels strewn over it: in the background, rims and cores."""
    tmp_path = tmp_path_factory.mktemp("speckled")
    mask = _boundary_mask(2)
    rng = np.random.default_rng(5)
    mask[rng.integers(0, HEIGHT, 80), rng.integers(0, WIDTH, 80)] = 1
    job, plan = _finalized(tmp_path, mask, model="builtin:boundary")
    return mask, count_objects(job, plan, ObjectsConfig(enabled=True))


def test_the_shipped_rules_minimum_interior_runs_chunked_as_on_the_whole_image(speckled) -> None:
    from segpipe.models.backends.builtin import BOUNDARY_CARD
    from segpipe.models.card import ModelCard
    from segpipe.objects.grow import grow_ids

    mask, result = speckled
    rule = ModelCard.from_json(BOUNDARY_CARD).instances
    assert rule is not None
    assert rule.min_interior > 1
    interior, count = ndimage.label(mask == 1)
    expected = grow_ids(interior.astype(np.uint32), mask, rule)
    np.testing.assert_array_equal(zarr.open_array(result.labels, mode="r")[:], expected)
    assert 0 < result.counts[1] < count  # the strewn pixels made no objects
    np.testing.assert_array_equal(_table(result.table)["object_id"].to_numpy(), np.arange(1, result.counts[1] + 1))


def test_polygons_are_in_id_order_and_the_scratch_outlines_are_removed(counted) -> None:
    job, _, result = counted
    frame = geopandas.read_parquet(io.BytesIO(location(result.polygons).read_bytes()))
    np.testing.assert_array_equal(frame["object_id"].to_numpy(), _table(result.table).column("object_id").to_numpy())
    assert not location(job.path(".outlines")).exists()
