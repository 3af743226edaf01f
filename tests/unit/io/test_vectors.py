"""segpipe.io.vectors' split of a chunk's outlines: objects on the chunk's edges come back as pieces for the
driver to join, those wholly inside are written whole to the chunk's scratch Parquet."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import shapely

from segpipe.io.vectors import chunk_outlines
from segpipe.storage import location


def _ids() -> np.ndarray:
    ids = np.zeros((8, 8), np.uint32)
    ids[0:2, 0:3] = 1  # on the top edge
    ids[3:5, 3:5] = 2  # inside
    ids[6, 2], ids[5, 1] = 3, 3  # inside, two diagonal pieces (an 8-connected object)
    return ids


def test_edge_objects_come_back_as_pieces(tmp_path) -> None:
    outlines = chunk_outlines(_ids(), (16, 32), str(tmp_path / "c.parquet"))
    assert {object_id for object_id, _ in outlines.pieces} == {1}


def test_inside_objects_are_written_whole_in_id_order(tmp_path) -> None:
    outlines = chunk_outlines(_ids(), (16, 32), str(tmp_path / "c.parquet"))
    assert outlines.inside is not None
    table = pq.read_table(io.BytesIO(location(outlines.inside).read_bytes()))
    geometries = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    assert table.column("object_id").to_pylist() == [2, 3]
    assert shapely.area(geometries).tolist() == [4.0, 2.0]
    assert shapely.get_type_id(geometries).tolist() == [3, 6]  # a polygon; the diagonal pair a multipolygon
    assert shapely.bounds(geometries[0]).tolist() == [35.0, 19.0, 37.0, 21.0]  # whole-image pixel corners


def test_a_chunk_with_nothing_inside_writes_no_scratch_file(tmp_path) -> None:
    ids = np.zeros((8, 8), np.uint32)
    ids[:, 0] = 1
    outlines = chunk_outlines(ids, (0, 0), str(tmp_path / "c.parquet"))
    assert outlines.inside is None
    assert not (tmp_path / "c.parquet").exists()
