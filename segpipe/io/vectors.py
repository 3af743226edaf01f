"""Object polygons traced per chunk, made whole across chunk borders, written as GeoParquet and GeoJSON.

A chunk's outlines come from ``rasterio.features.shapes`` (pixel-corner coordinates, holes kept), so the pieces
of an object cut by a chunk border share that border's edges exactly and ``shapely.union_all`` joins them
into one polygon. Coordinates are pixels (x right, y down) unless the input is georeferenced: then the GeoTIFF
transform maps them into the input's CRS.

Memory grows with the objects on chunk edges, not with all objects: a chunk's task writes the polygons of the
objects wholly inside it to a scratch Parquet (``chunk_outlines``) and returns only the pieces of objects on its
edges, which the driver joins (``merge_polygons``). The outputs are then written one band of chunk rows at a
time (``bands``): an object's id follows its first pixel in raster order, which lies on its top row, so
sorting each band by id gives the whole file in id order.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.outlines import TracedBlock, geo_modules, joined, trace_block, traced
from segpipe.storage import location

PIXEL_SCALE, TIEPOINT, TRANSFORM, GEOKEYS = 33550, 33922, 34264, 34735
CRS_KEYS = (3072, 2048)  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey


@dataclass(frozen=True)
class Georeference:
    """Pixel (col, row) to map (x, y): ``x = a*col + b*row + c``, ``y = d*col + e*row + f``; ``crs`` as EPSG."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float
    crs: str | None

    def to_map(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixel coordinates (corners or centres, as given)."""
        return self.a * col + self.b * row + self.c, self.d * col + self.e * row + self.f

    @property
    def affine(self) -> tuple[float, float, float, float, float, float]:
        """The transform in shapely's ``affine_transform`` order (a, b, d, e, xoff, yoff)."""
        return (self.a, self.b, self.d, self.e, self.c, self.f)


def georeference(geotiff_tags: Sequence[Sequence[Any]] | None) -> Georeference | None:
    """The transform and CRS of a GeoTIFF's tags (as ``read_metadata`` keeps them), or None when not georeferenced."""
    tags = {int(code): value for code, _dtype, _count, value in geotiff_tags or ()}
    crs = _epsg(tags.get(GEOKEYS))
    if TRANSFORM in tags:
        m = [float(v) for v in tags[TRANSFORM]]
        return Georeference(m[0], m[1], m[3], m[4], m[5], m[7], crs)
    if PIXEL_SCALE in tags and TIEPOINT in tags:
        sx, sy = (float(v) for v in tags[PIXEL_SCALE][:2])
        i, j, _k, x, y = (float(v) for v in tags[TIEPOINT][:5])
        return Georeference(sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy, crs)
    return None


def _epsg(geokeys: Any) -> str | None:
    """``EPSG:<code>`` from a GeoKeyDirectory (ProjectedCSType, else GeographicType), or None."""
    if not geokeys:
        return None
    keys = [int(v) for v in geokeys]
    for n in range(4, len(keys) - 3, 4):
        key, location, _count, value = keys[n : n + 4]
        if key in CRS_KEYS and location == 0 and 0 < value < 32767:
            return f"EPSG:{value}"
    return None


def chunk_polygons(ids: np.ndarray, origin: tuple[int, int]) -> list[tuple[int, bytes]]:
    """The outlines in one chunk of the id image, as (object id, WKB) pieces in whole-image pixel coordinates.

    Args:
        ids: The chunk's object ids (0 background).
        origin: The chunk's (row, col) in the image.

    Returns:
        One piece per connected part of an object inside the chunk, holes kept.
    """
    shapely, _ = geo_modules()
    values, geometries = traced(ids, origin)
    return list(zip(values.tolist(), shapely.to_wkb(geometries).tolist(), strict=True))


@dataclass(frozen=True)
class ChunkOutlines:
    """One chunk's polygons, split into those the driver joins and those already whole.

    Attributes:
        row: The chunk's first row in the image.
        pieces: (id, WKB) pieces of the objects on the chunk's edges.
        inside: URL of the scratch Parquet of the objects wholly inside (None when there are none).
    """

    row: int
    pieces: list[tuple[int, bytes]]
    inside: str | None


def chunk_outlines(ids: np.ndarray, origin: tuple[int, int], inside_url: str, simplify: float = 0.0) -> ChunkOutlines:
    """``chunk_polygons`` of one chunk, split by whether an object touches the chunk's edge rows or columns.

    Objects on an edge are returned as pieces; those wholly inside are joined here (``union_all`` of their
    pieces, as ``merge_polygons`` would), simplified by ``simplify`` pixels and written to ``inside_url`` as
    Parquet (``object_id``, WKB ``geometry``), sorted by id.
    """
    return write_outlines(trace_block(ids, origin, simplify), origin[0], inside_url)


def write_outlines(block: TracedBlock, row: int, inside_url: str) -> ChunkOutlines:
    """A traced block's outlines: the objects wholly inside written to ``inside_url``, the edge pieces returned."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not block.inside_ids.size:
        return ChunkOutlines(row, block.edge, None)
    table = pa.table(
        {"object_id": pa.array(block.inside_ids, pa.int64()), "geometry": pa.array(block.inside, pa.binary())}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    location(inside_url).write_bytes(buffer.getvalue())
    return ChunkOutlines(row, block.edge, inside_url)


@dataclass(frozen=True)
class Polygons:
    """One polygon (or multipolygon, for an 8-connected object) per object, ordered by object id."""

    ids: np.ndarray
    geometries: list[Any]


def merge_polygons(parts: Sequence[Sequence[tuple[int, bytes]]], simplify: float = 0.0) -> Polygons:
    """Join each object's pieces from every chunk into one geometry; ``simplify`` is a tolerance in pixels."""
    shapely, _ = geo_modules()
    pieces: dict[int, list[Any]] = defaultdict(list)
    for part in parts:
        for object_id, wkb in part:
            pieces[object_id].append(shapely.from_wkb(wkb))
    ids = np.array(sorted(pieces), np.int64)
    return Polygons(ids, [joined(pieces[object_id], simplify) for object_id in ids.tolist()])


@dataclass(frozen=True)
class Band:
    """The polygons of the objects whose top row lies in one band of chunk rows, by id, with their classes."""

    ids: np.ndarray
    classes: np.ndarray
    geometries: list[Any]


def bands(
    outlines: Sequence[ChunkOutlines],
    joined: Polygons,
    object_id: np.ndarray,
    object_class: np.ndarray,
    min_row: np.ndarray,
) -> Iterator[Band]:
    """Every object's polygon, band by band of chunk rows, in id order.

    Each band is the scratch Parquets of its chunks, read one band at a time, and the joined edge objects whose
    top row (``min_row`` of the table, whose rows are ``object_id``, sorted) lies in the band.
    """
    shapely, _ = geo_modules()
    import pyarrow.parquet as pq

    starts = np.array(sorted({o.row for o in outlines}), np.int64)
    inside: dict[int, list[str]] = defaultdict(list)
    for part in outlines:
        if part.inside is not None:
            inside[part.row].append(part.inside)
    rows = min_row[np.searchsorted(object_id, joined.ids)] if joined.ids.size else np.zeros(0, np.int64)
    band_of = starts[np.searchsorted(starts, rows, side="right") - 1] if rows.size else rows
    edge_geometries = np.empty(len(joined.geometries), object)
    edge_geometries[:] = joined.geometries
    for start in starts.tolist():
        ids, geometries = [joined.ids[band_of == start]], [edge_geometries[band_of == start]]
        for url in inside[start]:
            table = pq.read_table(io.BytesIO(location(url).read_bytes()))
            ids.append(table.column("object_id").to_numpy())
            geometries.append(shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False)))
        found = np.concatenate(ids).astype(np.int64)
        if not found.size:
            continue
        order = np.argsort(found, kind="stable")
        found = found[order]
        yield Band(found, object_class[np.searchsorted(object_id, found)], list(np.concatenate(geometries)[order]))


def remove_outlines(outlines: Iterable[ChunkOutlines]) -> None:
    """Delete the scratch Parquets."""
    for part in outlines:
        if part.inside is not None:
            location(part.inside).remove()


def to_map(polygons: Polygons | Band, geo: Georeference | None) -> list[Any]:
    """The geometries in the input's CRS when it has one, else as they are (pixels)."""
    if geo is None:
        return polygons.geometries
    from shapely import affinity

    return [affinity.affine_transform(g, geo.affine) for g in polygons.geometries]


def write_geoparquet(url: str, parts: Iterable[Band], class_names: Sequence[str], geo: Georeference | None) -> None:
    """GeoParquet of the polygons (``object_id``, ``class``, ``class_name``, ``geometry``), atomically.

    One row group per band, CRS from ``geo``; the ``geo`` metadata (geopandas' own, with this file's geometry
    types and bounds) goes into the footer once every band is written.
    """
    shapely, _ = geo_modules()
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("object_id", pa.int64()), ("class", pa.int64()), ("class_name", pa.large_string()), ("geometry", pa.binary())]
    )
    types: set[int] = set()
    low, high = np.full(2, np.inf), np.full(2, -np.inf)
    with location(url).staged_write() as path, pq.ParquetWriter(path, schema) as writer:
        for band in parts:
            geometries = np.empty(len(band.geometries), object)
            geometries[:] = to_map(band, geo)
            types.update(shapely.get_type_id(geometries).tolist())
            bounds = shapely.total_bounds(geometries)
            low, high = np.minimum(low, bounds[:2]), np.maximum(high, bounds[2:])
            names = pa.array([class_names[int(c)] for c in band.classes], pa.large_string())
            columns = [pa.array(band.ids, pa.int64()), pa.array(band.classes, pa.int64()), names]
            writer.write_table(pa.table([*columns, pa.array(shapely.to_wkb(geometries), pa.binary())], schema=schema))
        meta = _geo_metadata(geo)
        column = meta["columns"]["geometry"]
        column["geometry_types"] = sorted(GEOMETRY_TYPES[t] for t in types)
        if types:
            column["bbox"] = [*low.tolist(), *high.tolist()]
        else:
            column.pop("bbox", None)
        writer.add_key_value_metadata({"geo": json.dumps(meta)})


GEOMETRY_TYPES = {3: "Polygon", 6: "MultiPolygon"}  # shapely's type ids of what the outlines are


def _geo_metadata(geo: Georeference | None) -> dict[str, Any]:
    """The GeoParquet ``geo`` metadata for a polygon column in ``geo``'s CRS (geopandas', from a one-row frame)."""
    import geopandas
    import pyarrow.parquet as pq
    import shapely

    frame = geopandas.GeoDataFrame(
        {"object_id": [0]}, geometry=[shapely.box(0, 0, 1, 1)], crs=geo.crs if geo is not None else None
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    metadata = pq.read_schema(io.BytesIO(buffer.getvalue())).metadata
    return dict(json.loads(metadata[b"geo"]))


def write_qupath_geojson(url: str, parts: Iterable[Band], class_names: Sequence[str]) -> None:
    """``qupath_geojson`` written band by band (atomic): the same FeatureCollection."""
    with location(url).staged_write() as path, open(path, "wb") as out:
        out.write(b'{"type": "FeatureCollection", "features": [')
        first = True
        for band in parts:
            for feature in _features(band.ids, band.geometries, band.classes, class_names):
                out.write((b"" if first else b", ") + json.dumps(feature).encode())
                first = False
        out.write(b"]}")


def geoparquet_bytes(
    polygons: Polygons, classes: np.ndarray, class_names: Sequence[str], geo: Georeference | None
) -> bytes:
    """GeoParquet of the polygons (``object_id``, ``class``, ``class_name``, ``geometry``), CRS from ``geo``."""
    import geopandas

    frame = geopandas.GeoDataFrame(
        {
            "object_id": polygons.ids,
            "class": classes,
            "class_name": [class_names[int(c)] for c in classes],
        },
        geometry=to_map(polygons, geo),
        crs=geo.crs if geo is not None else None,
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def qupath_geojson(polygons: Polygons, classes: np.ndarray, class_names: Sequence[str]) -> bytes:
    """A GeoJSON FeatureCollection QuPath imports: one detection per object, classified by its class name."""
    features = list(_features(polygons.ids, polygons.geometries, classes, class_names))
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _features(
    ids: np.ndarray, geometries: Sequence[Any], classes: np.ndarray, class_names: Sequence[str]
) -> Iterator[dict[str, Any]]:
    import shapely

    for object_id, geometry, c in zip(ids.tolist(), geometries, classes, strict=True):
        yield {
            "type": "Feature",
            "id": str(object_id),
            "geometry": json.loads(shapely.to_geojson(geometry)),
            "properties": {
                "objectType": "detection",
                "classification": {"name": class_names[int(c)]},
                "object_id": int(object_id),
            },
        }
