"""The outlines of one block of an id image: traced by rasterio, built by shapely; pure, no storage.

``segpipe.io.vectors`` writes and joins what this module traces. Tracing holds the GIL throughout (rasterio calls
GDAL's polygonize without releasing it), so the objects stage runs ``trace_block`` in child processes
(``segpipe.offload``); this module imports only numpy, shapely and rasterio, so that a child starts quickly.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.errors import ConfigError

GEO_EXTRA = "segpipe[objects]"
INT32_MAX = (1 << 31) - 1
_FILTER_LOCK = threading.Lock()


def geo_modules() -> tuple[Any, Any]:
    """Shapely and rasterio.features, or one line naming the extra that brings them."""
    try:
        import rasterio.features
        import shapely
    except ImportError as exc:
        raise ConfigError(f"object polygons need {GEO_EXTRA} (pip install '{GEO_EXTRA}'): {exc}") from None
    return shapely, rasterio.features


def traced(ids: np.ndarray, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per connected piece of each object in a block: the pieces' ids (int64) and polygons (objects).

    ``rasterio.features.shapes`` traces the rings (pixel corners, whole-image coordinates from ``origin``); the
    polygons are built in two vectorised shapely calls (rings from all coordinates, polygons from the rings:
    the first of each its shell, the rest its holes) rather than one ``shapely.geometry.shape`` per piece,
    which cost more than the tracing.
    """
    shapely, features = geo_modules()
    from rasterio.transform import Affine

    if ids.size and int(ids.max()) > INT32_MAX:
        raise ConfigError(f"polygons are traced for at most {INT32_MAX} objects, found id {int(ids.max())}")
    values = np.ascontiguousarray(ids, dtype=np.int32)
    transform = Affine.translation(origin[1], origin[0])
    _quiet_identity_transform()
    pieces = list(features.shapes(values, mask=values > 0, connectivity=4, transform=transform))
    if not pieces:
        return np.zeros(0, np.int64), np.empty(0, object)
    rings = [ring for geom, _ in pieces for ring in geom["coordinates"]]  # closed; per piece the shell, then holes
    polygon_of = np.repeat(np.arange(len(pieces)), [len(geom["coordinates"]) for geom, _ in pieces])
    flat = itertools.chain.from_iterable
    coordinates = np.fromiter(flat(flat(rings)), np.float64).reshape(-1, 2)
    linear = shapely.linearrings(coordinates, indices=np.repeat(np.arange(len(rings)), [len(r) for r in rings]))
    found = [int(value) for _, value in pieces]
    return np.array(found, np.int64), shapely.polygons(linear, indices=polygon_of)


def _quiet_identity_transform() -> None:
    """Silence rasterio's warning of the identity transform, which pixel coordinates are.

    A tracing child process has nothing that would route the warning: it reached the terminal. The filter is
    process-wide (``catch_warnings`` is not thread-safe, and the tasks are threads), added when missing (a test
    harness may reset the filters) and never moved once there, which would leave a moment without it.
    """
    from rasterio.errors import NotGeoreferencedWarning

    with _FILTER_LOCK:
        if not any(f[0] == "ignore" and f[2] is NotGeoreferencedWarning for f in warnings.filters):
            warnings.filterwarnings("ignore", "Dataset has no geotransform", NotGeoreferencedWarning)


def joined(group: list[Any], simplify: float) -> Any:
    """One object's pieces as one geometry (``union_all``), simplified by ``simplify`` pixels when above 0."""
    shapely, _ = geo_modules()
    whole = group[0] if len(group) == 1 else shapely.union_all(group)
    return shapely.simplify(whole, simplify, preserve_topology=True) if simplify > 0 else whole


@dataclass(frozen=True)
class TracedBlock:
    """A block's outlines, split by whether an object touches the block's edge rows or columns.

    Attributes:
        edge: (id, WKB) pieces of the objects on the block's edges, for the driver to join.
        inside_ids: The objects wholly inside, sorted.
        inside: Their polygons, whole (and simplified), as WKB in the order of ``inside_ids``.
    """

    edge: list[tuple[int, bytes]]
    inside_ids: np.ndarray
    inside: list[bytes]


def trace_block(ids: np.ndarray, origin: tuple[int, int], simplify: float = 0.0) -> TracedBlock:
    """The ``traced`` pieces of one block, those of objects wholly inside it joined per object (``joined``)."""
    shapely, _ = geo_modules()
    values, geometries = traced(ids, origin)
    edge_ids = np.unique(np.concatenate([ids[0], ids[-1], ids[:, 0], ids[:, -1]])) if ids.size else np.zeros(0)
    on_edge = np.isin(values, edge_ids)
    edge = list(zip(values[on_edge].tolist(), shapely.to_wkb(geometries[on_edge]).tolist(), strict=True))
    order = np.argsort(values[~on_edge], kind="stable")
    inside_values, inside_pieces = values[~on_edge][order], geometries[~on_edge][order]
    inside_ids, starts = np.unique(inside_values, return_index=True)
    groups = np.split(inside_pieces, starts[1:]) if inside_ids.size else []
    inside = [joined(list(group), simplify) for group in groups]
    return TracedBlock(edge, inside_ids.astype(np.int64), shapely.to_wkb(inside).tolist())
