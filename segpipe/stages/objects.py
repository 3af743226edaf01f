"""Objects: the connected components of a committed mask, measured and outlined chunk by chunk on the cluster.

Four passes over the mask's chunks, each a task per chunk: border records (merged into a numbering on the
driver), the relabel pass writing ``labels/objects`` (resumable: a ledger marks each chunk written), per-object
partial sums (merged into the table) and polygons (each chunk writes those of the objects wholly inside it to a
scratch Parquet and returns the pieces of the objects on its edges, joined per object on the driver). The driver
holds the border records, the merged sums and the edge objects' polygons, never an image or every polygon.
Outputs, in the image's folder: the id image in the OME-Zarr with its pyramid, ``objects.parquet`` (the table)
and ``polygons.parquet`` (GeoParquet, written one band of chunk rows at a time), and with ``--export-geojson``
``objects.geojson``.

A model whose card has an ``instances`` rule (a boundary class) gets one more pass: the relabel pass writes the
interior class's ids to ``objects_interior`` in the store (kept, so a killed run resumes), and a growing pass
(``segpipe.objects.grow``) reads them with a halo of the rule's width and writes the grown ids to
``labels/objects``. The table and polygons describe the grown objects; their class is the interior class.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dask.delayed import delayed

from segpipe import offload
from segpipe.config import ObjectsConfig
from segpipe.executor import Executor, local_executor, task_slots
from segpipe.io import vectors
from segpipe.io.export import scaled_geotiff_tags
from segpipe.io.images import read_metadata
from segpipe.io.ledger import ChunkLedger
from segpipe.io.omezarr import NGFF_VERSION, build_pyramid, level_count, multiscales, read_segpipe_attrs
from segpipe.objects.components import chunk_borders, relabel_chunk
from segpipe.objects.grid import Block, ChunkRelabel, ComponentPlan, blocks_of
from segpipe.objects.grow import InstanceRule, Renumbering, chunk_areas, grow_block, renumbering
from segpipe.objects.merge import merge_borders
from segpipe.objects.table import ObjectTable, finish, merge_sums, object_sums, read_with_halo
from segpipe.outlines import trace_block
from segpipe.stages.fingerprints import fingerprint
from segpipe.stages.ingest import level0
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.storage import OWN_FORMAT, create_array, location, open_array, open_group
from segpipe.tiling import Region

OBJECTS = "objects"
INTERIOR = "objects_interior"
PARTITION = "run_date"
SUMS_TASKS_PER_SLOT = 4  # the least sums tasks per slot for which blocks of 2 x 2 chunks are used
TRACING_MODULES = ("segpipe.outlines", "shapely", "rasterio.features")
OFFLOAD_MIN_CHUNKS = 32  # below, starting the tracing processes (about 0.5 CPU-s) costs more than they save
OUTLINES = ".outlines"  # scratch folder (in the image's folder) of the polygons wholly inside each chunk


@dataclass(frozen=True)
class Counted:
    """The objects stage's result: where its outputs are, counts and median areas per class, its seconds."""

    labels: str
    table: str
    polygons: str
    geojson: str | None
    counts: tuple[int, ...]  # per class, background included (always 0)
    median_areas: tuple[float | None, ...]  # pixels, per class; None where a class has no object
    seconds: float


def count_objects(
    job: ImageJob, plan: BatchPlan, config: ObjectsConfig, executor: Executor = local_executor
) -> Counted:
    """Find, measure and outline every foreground object of the job's committed mask."""
    start = time.perf_counter()
    mask = open_array(job.mask, mode="r", zarr_format=OWN_FORMAT)
    grid = blocks_of(mask, (plan.chunk, plan.chunk))
    rule = plan.model.card.instances
    classes = (rule.interior,) if rule else tuple(range(1, plan.model.card.num_classes))
    apart = len(grid) >= OFFLOAD_MIN_CHUNKS  # trace in child processes (segpipe.offload)
    records = executor(
        [delayed(_borders, pure=False)(job.mask, b, classes, config.connectivity, apart) for b in grid], OBJECTS
    )
    numbering = merge_borders(records, config.connectivity)
    labels = _write_ids(job, plan, config, grid, numbering, classes, executor)
    table = _measure(job, labels, _sums_grid(mask, grid, plan.chunk, task_slots(executor, OBJECTS)), rule, executor)
    scratch = location(job.path(OUTLINES))
    outline = delayed(_outlines, pure=False)
    outlines: list[vectors.ChunkOutlines] = executor(
        [
            outline(labels, b, scratch.child(f"{b.index[0]}-{b.index[1]}.parquet").url, config.simplify, apart)
            for b in grid
        ],
        OBJECTS,
    )
    joined = vectors.merge_polygons([part.pieces for part in outlines], config.simplify)
    meta = read_metadata(job.image)
    meta["pixel_size"], meta["unit"] = job.view.ngff_pixel_size(meta["pixel_size"], meta["unit"])
    geo = vectors.georeference(scaled_geotiff_tags(meta["geotiff_tags"], job.view.scale))
    table_url = job.path("objects.parquet")
    _check_fence(job)
    names = plan.model.card.class_names
    location(table_url).write_bytes(_table_bytes(table, names, tuple(meta["pixel_size"]), meta["unit"], geo))
    polygons_url = job.path("polygons.parquet")

    def bands() -> Iterator[vectors.Band]:
        return vectors.bands(outlines, joined, table.object_id, table.object_class, table.bbox_min_row)

    vectors.write_geoparquet(polygons_url, bands(), names, geo)
    geojson = None
    if config.geojson:
        geojson = job.path("objects.geojson")
        vectors.write_qupath_geojson(geojson, bands(), names)
    scratch.remove()
    counts, medians = class_counts(table, plan.model.card.num_classes)
    return Counted(labels, table_url, polygons_url, geojson, counts, medians, time.perf_counter() - start)


def class_counts(table: ObjectTable, num_classes: int) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    """Objects per class and the median area (pixels) of each class's objects."""
    counts, medians = [], []
    for k in range(num_classes):
        areas = table.area[table.object_class == k]
        counts.append(int(areas.size))
        medians.append(float(np.median(areas)) if areas.size else None)
    return tuple(counts), tuple(medians)


def _check_fence(job: ImageJob) -> None:
    if job.fence is not None:
        job.fence.check()


def _borders(mask_url: str, block: Block, classes: tuple[int, ...], connectivity: int, apart: bool) -> Any:
    if apart:
        offload.warm(*TRACING_MODULES)  # the outlines pass's processes start while the passes before it run
    mask = open_array(mask_url, mode="r", zarr_format=OWN_FORMAT)
    return chunk_borders(np.asarray(mask[block.slices]), block, classes, connectivity)


def _write_ids(
    job: ImageJob,
    plan: BatchPlan,
    config: ObjectsConfig,
    grid: list[Block],
    numbering: ComponentPlan,
    classes: tuple[int, ...],
    executor: Executor,
) -> str:
    """The relabel pass (and for a boundary model the growing pass) into ``labels/objects/0``, then its pyramid."""
    group = location(job.store).child("labels", OBJECTS)
    ids_url = group.child("0").url
    chunks, dtype = numbering.chunks, numbering.dtype
    key = fingerprint({"mask": job.infer_key, "connectivity": config.connectivity, "dtype": str(dtype)})
    relabel = delayed(_relabel, pure=False)
    rule = plan.model.card.instances
    first_url = ids_url if rule is None else location(job.store).child(INTERIOR).url
    args = (job.mask, first_url, classes, config.connectivity)
    _chunk_pass(
        job,
        plan,
        grid,
        (OBJECTS if rule is None else INTERIOR, key),
        first_url,
        dtype,
        executor,
        lambda block, ledger: relabel(*args, ledger, block, chunks[block.index]),
    )
    if rule is not None:
        grow = delayed(_grow, pure=False)
        grow_key = fingerprint({"interior": key, "rule": rule.to_dict()})
        plans = _renumbering(first_url, grid, numbering.count, rule, executor)
        grow_args = (first_url, job.mask, ids_url, rule, config.connectivity)
        _chunk_pass(
            job,
            plan,
            grid,
            (OBJECTS, grow_key),
            ids_url,
            dtype,
            executor,
            lambda block, ledger: grow(*grow_args, ledger, block, plans.get(block.index)),
        )
    levels = level_count(*job.grid[1:])
    build_pyramid(group.url, levels, plan.chunk, True, executor)
    _write_label_metadata(job, levels)
    return ids_url


def _chunk_pass(
    job: ImageJob,
    plan: BatchPlan,
    grid: list[Block],
    stage: tuple[str, str],
    url: str,
    dtype: np.dtype,
    executor: Executor,
    task: Callable[[Block, ChunkLedger], Any],
) -> None:
    """One resumable pass writing the id array at ``url``: created when its ledger is fresh, done chunks skipped."""
    ledger = ChunkLedger(location(job.store), stage[0], stage[1], job.fence)
    if ledger.is_fresh():
        ledger.reset()
        _check_fence(job)
        create_array(
            url,
            shape=job.grid[1:],
            chunks=(plan.chunk, plan.chunk),
            dtype=dtype,
            fill_value=0,
            overwrite=True,
            dimension_names=("y", "x"),
        )
    todo = set(ledger.todo(_region(b) for b in grid))
    executor([task(b, ledger) for b in grid if _region(b) in todo], OBJECTS)


def _region(block: Block) -> Region:
    (y, x), (h, w) = block.origin, block.shape
    return Region(y, y + h, x, x + w)


def _relabel(
    mask_url: str,
    ids_url: str,
    classes: tuple[int, ...],
    connectivity: int,
    ledger: ChunkLedger,
    block: Block,
    chunk: ChunkRelabel,
) -> None:
    mask = open_array(mask_url, mode="r", zarr_format=OWN_FORMAT)
    ids = open_array(ids_url, mode="r+", zarr_format=OWN_FORMAT)
    ledger.check_fence()
    ids[block.slices] = relabel_chunk(np.asarray(mask[block.slices]), chunk, classes, connectivity, True, ids.dtype)
    ledger.mark_done(_region(block))


def _renumbering(
    interior_url: str, grid: list[Block], count: int, rule: InstanceRule, executor: Executor
) -> dict[tuple[int, int], Renumbering]:
    """Per block, the new ids of the interiors its halo sees, from a counting pass (none without ``min_interior``)."""
    if not rule.min_interior:
        return {}
    parts = executor([delayed(_areas, pure=False)(interior_url, b) for b in grid], OBJECTS)
    return renumbering(grid, parts, count, rule)


def _areas(interior_url: str, block: Block) -> tuple[np.ndarray, np.ndarray]:
    interior = open_array(interior_url, mode="r", zarr_format=OWN_FORMAT)
    return chunk_areas(np.asarray(interior[block.slices]))


def _grow(
    interior_url: str,
    mask_url: str,
    ids_url: str,
    rule: InstanceRule,
    connectivity: int,
    ledger: ChunkLedger,
    block: Block,
    plan: Renumbering | None,
) -> None:
    interior = open_array(interior_url, mode="r", zarr_format=OWN_FORMAT)
    mask = open_array(mask_url, mode="r", zarr_format=OWN_FORMAT)
    ids = open_array(ids_url, mode="r+", zarr_format=OWN_FORMAT)
    ledger.check_fence()
    halo = rule.width
    found = read_with_halo(interior, block, halo)
    found = plan.apply(found) if plan is not None else found
    grown = grow_block(found, read_with_halo(mask, block, halo), rule, connectivity)
    ids[block.slices] = grown
    ledger.mark_done(_region(block))


def _write_label_metadata(job: ImageJob, levels: int) -> None:
    """Add ``objects`` to the store's labels and describe it as an NGFF label image of the input."""
    attrs = read_segpipe_attrs(job.store)
    pixel_size = tuple(attrs.get("pixel_size") or (1.0, 1.0))
    labels = open_group(location(job.store).child("labels"), mode="a", zarr_format=OWN_FORMAT)
    ome: Any = labels.attrs.get("ome") or {}
    names = [str(n) for n in ome.get("labels", ["mask"])]
    labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names if OBJECTS in names else [*names, OBJECTS]}
    group = open_group(location(job.store).child("labels", OBJECTS), mode="a", zarr_format=OWN_FORMAT)
    group.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": multiscales(OBJECTS, "yx", levels, (pixel_size[0], pixel_size[1]), attrs.get("unit")),
        "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
    }


def _sums_grid(mask: Any, grid: list[Block], chunk: int, slots: int) -> list[Block]:
    """The sums pass's blocks: 2 x 2 chunks where that leaves ``SUMS_TASKS_PER_SLOT`` per slot, else ``grid``.

    Each block is read with a 2-pixel halo, which decodes every chunk the halo touches: 9 chunks for one chunk's
    sums, 16 for four (a fifth less time at 8192^2). Any blocks give the same table (the sums are additive).
    """
    grouped = blocks_of(mask, (2 * chunk, 2 * chunk))
    return grouped if len(grouped) >= SUMS_TASKS_PER_SLOT * slots else grid


def _measure(
    job: ImageJob, ids_url: str, grid: list[Block], rule: InstanceRule | None, executor: Executor
) -> ObjectTable:
    task = delayed(_sums, pure=False)
    parts = executor([task(ids_url, job.mask, level0(job), rule, b) for b in grid], OBJECTS)
    return finish(merge_sums(parts), job.grid[1:])


def _sums(ids_url: str, mask_url: str, image_url: str, rule: InstanceRule | None, block: Block) -> Any:
    ids = open_array(ids_url, mode="r", zarr_format=OWN_FORMAT)
    mask = open_array(mask_url, mode="r", zarr_format=OWN_FORMAT)
    image = open_array(image_url, mode="r", zarr_format=OWN_FORMAT)
    band = np.asarray(image[(..., *block.slices)])
    classes = np.asarray(mask[block.slices])
    if rule is not None:  # a grown object may start on a boundary pixel; its class is the interior's
        classes = rule.fold(classes)
    return object_sums(read_with_halo(ids, block), block, classes, band)


def _outlines(ids_url: str, block: Block, inside_url: str, simplify: float, apart: bool) -> vectors.ChunkOutlines:
    ids = open_array(ids_url, mode="r", zarr_format=OWN_FORMAT)
    arguments = (np.asarray(ids[block.slices]), block.origin, simplify)
    traced = offload.run(trace_block, *arguments) if apart else trace_block(*arguments)  # holds the GIL
    return vectors.write_outlines(traced, block.origin[0], inside_url)


def _table_bytes(
    table: ObjectTable,
    class_names: tuple[str, ...],
    pixel_size: tuple[float, float],
    unit: str | None,
    geo: vectors.Georeference | None,
) -> bytes:
    """The table as Parquet, with class names, physical area and centroid (with a pixel size) and map ones."""
    arrow = table.to_arrow()
    names = pa.array([class_names[int(c)] for c in table.object_class], pa.string())
    arrow = arrow.add_column(arrow.schema.get_field_index("class") + 1, "class_name", names)
    if unit:
        arrow = arrow.append_column("area_physical", pa.array(table.area * pixel_size[0] * pixel_size[1]))
        arrow = arrow.append_column("centroid_y_physical", pa.array((table.centroid_row + 0.5) * pixel_size[0]))
        arrow = arrow.append_column("centroid_x_physical", pa.array((table.centroid_col + 0.5) * pixel_size[1]))
    if geo is not None:
        x, y = geo.to_map(table.centroid_col + 0.5, table.centroid_row + 0.5)  # pixel centres
        x0, y0 = geo.to_map(table.bbox_min_col.astype(float), table.bbox_min_row.astype(float))
        x1, y1 = geo.to_map(table.bbox_max_col.astype(float), table.bbox_max_row.astype(float))
        for name, values in (
            ("centroid_x_map", x),
            ("centroid_y_map", y),
            ("bbox_min_x_map", np.minimum(x0, x1)),
            ("bbox_min_y_map", np.minimum(y0, y1)),
            ("bbox_max_x_map", np.maximum(x0, x1)),
            ("bbox_max_y_map", np.maximum(y0, y1)),
        ):
            arrow = arrow.append_column(name, pa.array(values))
    arrow = arrow.replace_schema_metadata({"unit": unit or "pixel", "crs": (geo.crs or "") if geo else ""})
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    return buffer.getvalue()


def objects_url(out: str, run_id: str, run_date: str) -> str:
    """Where a run's object rows go: ``<out>/objects/run_date=<date>/<run_id>.parquet``."""
    return location(out).child(OBJECTS, f"{PARTITION}={run_date}", f"{run_id}.parquet").url


def append_objects(out: str, run_id: str, run_date: str, tables: dict[str, str]) -> str | None:
    """The run's object tables in one Parquet object beside the results table, an ``image_name`` column first.

    Args:
        out: The run's output folder or URL.
        run_id: The run, as in the results table.
        run_date: Its date (``YYYY-MM-DD``), the Hive partition.
        tables: Image name to the URL of its ``objects.parquet``; images skipped as finished earlier included.

    Returns:
        The URL written, or None when no image has objects.
    """
    parts = []
    for name, url in tables.items():
        table = pq.read_table(io.BytesIO(location(url).read_bytes()))
        parts.append(table.add_column(0, "image_name", pa.array([name] * table.num_rows, pa.string())))
    if not parts:
        return None
    merged = pa.concat_tables(parts, promote_options="permissive").replace_schema_metadata(None)
    merged = merged.add_column(0, "run_id", pa.array([run_id] * merged.num_rows, pa.string()))
    buffer = io.BytesIO()
    pq.write_table(merged, buffer)
    target = location(objects_url(out, run_id, run_date))
    target.write_bytes(buffer.getvalue())
    return target.url
