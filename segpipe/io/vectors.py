"""Object polygons traced per chunk, made whole across chunk borders, written as GeoParquet and GeoJSON.

A chunk's outlines come from ``rasterio.features.shapes`` (pixel-corner coordinates, holes kept), so the pieces
of an object cut by a chunk border share that border's edges exactly and ``shapely.union_all`` joins them
into one polygon. Coordinates are pixels (x right, y down) unless the input is georeferenced: then the GeoTIFF
transform maps them into the input's CRS.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.errors import ConfigError

GEO_EXTRA = "segpipe[objects]"
INT32_MAX = (1 << 31) - 1
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


def _geo_modules() -> tuple[Any, Any]:
    """Shapely and rasterio.features, or one line naming the extra that brings them."""
    try:
        import rasterio.features
        import shapely
    except ImportError as exc:
        raise ConfigError(f"object polygons need {GEO_EXTRA} (pip install '{GEO_EXTRA}'): {exc}") from None
    return shapely, rasterio.features


def chunk_polygons(ids: np.ndarray, origin: tuple[int, int]) -> list[tuple[int, bytes]]:
    """The outlines in one chunk of the id image, as (object id, WKB) pieces in whole-image pixel coordinates.

    Args:
        ids: The chunk's object ids (0 background).
        origin: The chunk's (row, col) in the image.

    Returns:
        One piece per connected part of an object inside the chunk, holes kept.
    """
    shapely, features = _geo_modules()
    from rasterio.transform import Affine

    if ids.size and int(ids.max()) > INT32_MAX:
        raise ConfigError(f"polygons are traced for at most {INT32_MAX} objects, found id {int(ids.max())}")
    values = np.ascontiguousarray(ids, dtype=np.int32)
    transform = Affine.translation(origin[1], origin[0])
    pieces = features.shapes(values, mask=values > 0, connectivity=4, transform=transform)
    return [(int(value), shapely.to_wkb(shapely.geometry.shape(geom))) for geom, value in pieces]


@dataclass(frozen=True)
class Polygons:
    """One polygon (or multipolygon, for an 8-connected object) per object, ordered by object id."""

    ids: np.ndarray
    geometries: list[Any]


def merge_polygons(parts: Sequence[Sequence[tuple[int, bytes]]], simplify: float = 0.0) -> Polygons:
    """Join each object's pieces from every chunk into one geometry; ``simplify`` is a tolerance in pixels."""
    shapely, _ = _geo_modules()
    pieces: dict[int, list[Any]] = defaultdict(list)
    for part in parts:
        for object_id, wkb in part:
            pieces[object_id].append(shapely.from_wkb(wkb))
    ids = np.array(sorted(pieces), np.int64)
    geometries = []
    for object_id in ids.tolist():
        group = pieces[object_id]
        whole = group[0] if len(group) == 1 else shapely.union_all(group)
        geometries.append(shapely.simplify(whole, simplify, preserve_topology=True) if simplify > 0 else whole)
    return Polygons(ids, geometries)


def to_map(polygons: Polygons, geo: Georeference | None) -> list[Any]:
    """The geometries in the input's CRS when it has one, else as they are (pixels)."""
    if geo is None:
        return polygons.geometries
    from shapely import affinity

    return [affinity.affine_transform(g, geo.affine) for g in polygons.geometries]


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
    import shapely

    features = [
        {
            "type": "Feature",
            "id": str(object_id),
            "geometry": json.loads(shapely.to_geojson(geometry)),
            "properties": {
                "objectType": "detection",
                "classification": {"name": class_names[int(c)]},
                "object_id": int(object_id),
            },
        }
        for object_id, geometry, c in zip(polygons.ids.tolist(), polygons.geometries, classes, strict=True)
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()
