"""segpipe.io.vectors' split of a chunk's outlines: objects on the chunk's edges come back as pieces for the
driver to join, those wholly inside are written whole to the chunk's scratch Parquet."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import shapely

from segpipe.io.vectors import chunk_outlines, chunk_polygons
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


def test_polygons_built_in_bulk_are_the_bytes_one_shape_per_piece_gives() -> None:
    """The vectorised construction (rings, then polygons with holes) must keep the WKB of
    ``shapely.geometry.shape`` on each traced piece: rings, their order and holes."""
    import rasterio.features

    rng = np.random.default_rng(3)
    ids = np.zeros((64, 64), np.uint32)
    ids[4:20, 4:20] = 5
    ids[8:12, 8:12] = 0  # a hole
    ids[10, 14] = 0  # a second hole
    ids[30:40, 2:60] = 9
    ids[45:, 45:] = (rng.random((19, 19)) > 0.5) * 11  # ragged pieces of one id
    values = ids.astype(np.int32)
    transform = rasterio.transform.Affine.translation(32, 16)
    traced = rasterio.features.shapes(values, mask=values > 0, connectivity=4, transform=transform)
    expected = [(int(v), shapely.to_wkb(shapely.geometry.shape(g))) for g, v in traced]
    assert chunk_polygons(ids, (16, 32)) == expected
    assert chunk_polygons(np.zeros((4, 4), np.uint32), (0, 0)) == []
