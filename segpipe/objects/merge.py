"""The driver's step of chunked connected components: join border components, number every component.

Border components are joined across facing block borders (a union-find over border components only, by
``scipy.sparse.csgraph``), and every component is numbered by its first pixel in raster order, from per-block
first-row histograms. Memory: O(total border length).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as graph_components

from segpipe.errors import InputError
from segpipe.objects.grid import ChunkBorders, ChunkRelabel, ComponentPlan, check_connectivity, id_dtype


def _facing(a: np.ndarray, b: np.ndarray, diagonal: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pixel pairs (as positions in two facing lines of equal length) that touch across a seam."""
    yield a, b
    if diagonal and a.size > 1:
        yield a[:-1], b[1:]
        yield a[1:], b[:-1]


def _seams(
    records: dict[tuple[int, int], ChunkBorders], diagonal: bool
) -> Iterator[tuple[ChunkBorders, ChunkBorders, np.ndarray, np.ndarray]]:
    """Every pair of touching border lines: (block A, block B, A's local ids, B's local ids), pixel by pixel."""
    for (i, j), a in records.items():
        if (right := records.get((i, j + 1))) is not None:
            for pa, pb in _facing(a.right, right.left, diagonal):
                yield a, right, pa, pb
        if (below := records.get((i + 1, j))) is not None:
            for pa, pb in _facing(a.bottom, below.top, diagonal):
                yield a, below, pa, pb
        if diagonal and (corner := records.get((i + 1, j + 1))) is not None:
            yield a, corner, a.bottom[-1:], corner.top[:1]
        if diagonal and (corner := records.get((i + 1, j - 1))) is not None:
            yield a, corner, a.bottom[:1], corner.top[-1:]


def _check_grid(records: dict[tuple[int, int], ChunkBorders]) -> tuple[list[int], list[int]]:
    """The grid's block rows and columns; InputError when blocks are missing or disagree on their extent."""
    rows = sorted({i for i, _ in records})
    cols = sorted({j for _, j in records})
    if len(records) != len(rows) * len(cols) or rows != list(range(len(rows))) or cols != list(range(len(cols))):
        raise InputError(f"border records cover {len(records)} blocks, not a full grid of {len(rows)}x{len(cols)}")
    for (i, j), r in records.items():
        if r.block.origin[0] != records[(i, 0)].block.origin[0] or r.block.origin[1] != records[(0, j)].block.origin[1]:
            raise InputError(f"block {(i, j)} at {r.block.origin} is off the grid of its row and column")
    return rows, cols


def merge_borders(records: Sequence[ChunkBorders], connectivity: int = 4) -> ComponentPlan:
    """Join border components across blocks and number every component (driver side).

    Args:
        records: One ``ChunkBorders`` per block of the grid (``chunk_borders``' results), any order.
        connectivity: The connectivity the records were made with (4 or 8).

    Returns:
        The component count, the id dtype and per-block relabel instructions.
    """
    check_connectivity(connectivity)
    by_index = {r.block.index: r for r in records}
    if not by_index:
        raise InputError("no border records to merge")
    rows, cols = _check_grid(by_index)
    width = max(r.block.origin[1] + r.block.shape[1] for r in records)
    offset: dict[tuple[int, int], int] = {}
    total = 0
    for index in sorted(by_index):
        offset[index] = total
        total += by_index[index].ids.size
    ordered = [by_index[k] for k in sorted(by_index)]
    key = np.concatenate(
        [np.zeros(0, np.int64)]
        + [(r.block.origin[0] + r.first_row) * width + r.block.origin[1] + r.first_col for r in ordered]
    )
    node_class = np.concatenate([np.zeros(0, np.int64)] + [r.classes for r in ordered])

    def nodes(r: ChunkBorders, local: np.ndarray) -> np.ndarray:
        return np.searchsorted(r.ids, local) + offset[r.block.index]

    src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for a, b, la, lb in _seams(by_index, connectivity == 8):
        both = (la > 0) & (lb > 0)
        na, nb = nodes(a, la[both]), nodes(b, lb[both])
        same = node_class[na] == node_class[nb]
        src.append(na[same])
        dst.append(nb[same])
    edges_from, edges_to = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(edges_from.size, np.int8), (edges_from, edges_to)), shape=(total, total))
    n_groups, group = graph_components(graph, directed=False)
    least = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(least, group, key)
    owned = key == least[group]

    group_id = np.zeros(n_groups, np.int64)
    plans: dict[tuple[int, int], ChunkRelabel] = {}
    before = 0  # owned components in earlier block rows
    for i in rows:
        band = [by_index[(i, j)] for j in cols]
        own = [owned[offset[r.block.index] : offset[r.block.index] + r.ids.size] for r in band]
        hist = np.stack(
            [
                r.row_counts - np.bincount(r.first_row[~o], minlength=r.row_counts.size)
                for r, o in zip(band, own, strict=True)
            ]
        )
        per_row = hist.sum(axis=0)
        above = np.concatenate(([0], np.cumsum(per_row)[:-1]))
        left = np.cumsum(hist, axis=0) - hist
        for j, (r, o) in enumerate(zip(band, own, strict=True)):
            base = 1 + before + above + left[j]
            lost = np.sort(r.first_row[~o] * r.block.shape[1] + r.first_col[~o])
            mine = r.first_row[o] * r.block.shape[1] + r.first_col[o]
            lost_left = np.searchsorted(lost, mine) - np.searchsorted(lost, r.first_row[o] * r.block.shape[1])
            at = offset[r.block.index] + np.flatnonzero(o)
            group_id[group[at]] = base[r.first_row[o]] + r.rank_in_row[o] - lost_left
            plans[r.block.index] = ChunkRelabel(row_base=base, ids=r.ids, global_ids=np.zeros(0), owned=o)
        before += int(hist.sum())
    node_id = group_id[group]
    for index, p in plans.items():
        start = offset[index]
        ids = node_id[start : start + p.ids.size]
        plans[index] = ChunkRelabel(row_base=p.row_base, ids=p.ids, global_ids=ids, owned=p.owned)
    return ComponentPlan(count=before, dtype=id_dtype(before), chunks=plans)
