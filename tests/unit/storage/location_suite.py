"""``LocationSuite``: what every ``Location`` backend must do, as test methods a backend's test class inherits.

As zarr's ``StoreTests`` (``tests/test_store/test_local.py``): a subclass sets ``backend`` (the class
``location()`` must pick) and ``across_processes`` (whether other processes see the same store), and gives a
``root`` fixture yielding a fresh, empty root Location; ``test_backends.py`` holds one subclass per backend.
Capabilities are read from the class flags, so a backend without conditional creates is checked for refusing.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import zarr

from segpipe.errors import OutputError
from segpipe.storage import Location, location

RACERS = 8  # threads racing for one key
PROCESSES = 4  # processes racing for one key, where the store is shared between processes
LOST = 3  # a racing process's exit status when another created the key first


def create_in_process(url: str, payload: bytes, barrier: threading.Barrier) -> None:
    """A racing process: wait for the others, try to create ``url``; exit 0 if it did, ``LOST`` if not."""
    target = location(url)
    barrier.wait()
    sys.exit(0 if target.create_if_absent(payload) else LOST)


class LocationSuite:
    """Every public method of a Location, on a fresh root from the ``root`` fixture."""

    backend: ClassVar[type[Location]]
    across_processes: ClassVar[bool] = True

    @pytest.fixture
    def root(self) -> Location:
        """A fresh, empty root Location of ``backend`` (each subclass gives its own)."""
        raise NotImplementedError

    def test_location_picks_this_backend(self, root: Location) -> None:
        assert type(location(root.url)) is self.backend

    def test_a_location_holds_its_url_only_and_pickles_as_it(self, root: Location) -> None:
        target = root.child("a.bin")
        copy = pickle.loads(pickle.dumps(target))
        assert vars(target) == {"url": target.url}
        assert copy == target
        assert type(copy) is type(target)
        assert hash(copy) == hash(target)

    def test_child_parent_and_name(self, root: Location) -> None:
        leaf = root.child("a", "b/")
        assert leaf.url == f"{root.url}/a/b"
        assert leaf.parent == root.child("a")
        assert leaf.name == "b"
        assert type(leaf) is type(root)
        assert root.child() == root

    def test_path_is_the_filesystems_name_for_it(self, root: Location) -> None:
        path = root.child("x").path
        assert path.endswith("/root/x")
        assert "://" not in path
        assert str(root) == root.url

    def test_protocol_and_is_local(self, root: Location) -> None:
        assert root.is_local == (root.protocol == "file")
        assert root.url.startswith("/" if root.is_local else f"{root.protocol}://")

    def test_write_read_size_and_exists(self, root: Location) -> None:
        target = root.child("a", "b.bin")
        assert not target.exists()
        target.write_bytes(b"first")
        target.write_bytes(b"second")  # replaces
        assert target.read_bytes() == b"second"
        assert target.size() == 6
        assert target.exists()
        assert not target.is_dir()
        assert root.child("a").is_dir()

    def test_an_empty_write_is_a_marker(self, root: Location) -> None:
        marker = root.child("done")
        marker.write_bytes(b"")
        assert marker.exists()
        assert marker.size() == 0

    def test_json_round_trip(self, root: Location) -> None:
        root.child("c.json").write_json({"iou": [0.5, None], "name": "x"}, indent=2)
        assert root.child("c.json").read_json() == {"iou": [0.5, None], "name": "x"}

    def test_missing_files_raise_file_not_found(self, root: Location) -> None:
        missing = root.child("nope.bin")
        for read in (missing.read_bytes, missing.size, missing.identity):
            with pytest.raises(FileNotFoundError):
                read()

    def test_staged_write_replaces_on_success_only(self, root: Location) -> None:
        target = root.child("file.bin")
        with target.staged_write() as local_file:
            Path(local_file).write_bytes(b"old")
        with pytest.raises(RuntimeError), target.staged_write() as local_file:
            Path(local_file).write_bytes(b"half of the new")
            raise RuntimeError("killed while writing")
        assert target.read_bytes() == b"old"
        assert root.listdir() == ["file.bin"]  # no temporary file beside it

    def test_listdir_names_direct_children_sorted(self, root: Location) -> None:
        assert root.listdir() == []
        for name in ("x/2", "x/1", "x/sub/3", "y"):
            root.child(name).write_bytes(b"1")
        assert root.listdir() == ["x", "y"]
        assert root.child("x").listdir() == ["1", "2", "sub"]
        assert root.child("y", "z").listdir() == []

    def test_remove_takes_files_and_trees_and_tolerates_nothing(self, root: Location) -> None:
        for name in ("x/1", "x/sub/2", "y"):
            root.child(name).write_bytes(b"1")
        root.child("x").remove()
        root.child("x").remove()
        root.child("y").remove()
        assert not root.child("x", "sub", "2").exists()
        assert root.listdir() == []

    def test_open_writes_and_reads_binary(self, root: Location) -> None:
        target = root.child("deep", "f.bin")
        with target.open("wb") as handle:
            handle.write(b"0123456789")
        with target.open() as handle:
            handle.seek(4)
            assert handle.read(3) == b"456"
        with pytest.raises(ValueError, match="only 'rb' and 'wb'"):
            target.open("a")

    def test_zarr_store_round_trip(self, root: Location) -> None:
        where = root.child("out.zarr", "mask")
        data = np.arange(35 * 29, dtype=np.uint16).reshape(35, 29)
        zarr.create_array(where.zarr_store(), shape=data.shape, chunks=(8, 8), dtype=data.dtype)[:] = data
        read_back = zarr.open_array(where.zarr_store(read_only=True), mode="r")
        np.testing.assert_array_equal(read_back[:], data)

    def test_identity_changes_with_content_and_only_then(self, root: Location) -> None:
        target = root.child("image.tif")
        target.write_bytes(b"one")
        first = target.identity()
        assert (first.url, first.size) == (target.url, 3)
        assert target.identity() == first
        target.write_bytes(b"one two")
        assert target.identity() != first

    def test_identity_of_a_directory_is_a_tree_hash(self, root: Location) -> None:
        root.child("d", "a").write_bytes(b"12")
        root.child("d", "b", "c").write_bytes(b"345")
        identity = root.child("d").identity()
        assert identity.size == 5
        assert identity.version.startswith("tree:")

    def test_check_writable_accepts_a_new_location_and_leaves_nothing(self, root: Location) -> None:
        root.child("not", "yet", "there").check_writable()
        assert root.listdir() == []

    def test_remove_partial_writes_keeps_real_files(self, root: Location) -> None:
        root.child("keep.bin").write_bytes(b"x")
        assert root.remove_partial_writes() == 0
        assert root.child("keep.bin").read_bytes() == b"x"

    def test_create_if_absent_creates_once_or_refuses(self, root: Location) -> None:
        target = root.child("leases", "image.json")
        if not root.supports_conditional_create:
            with pytest.raises(OutputError, match="cannot create a file only if it is absent") as info:
                target.create_if_absent(b"first")
            assert "\n" not in str(info.value)
            assert not target.exists()
            return
        assert target.create_if_absent(b"first")
        assert not target.create_if_absent(b"second")
        assert target.read_bytes() == b"first"
        assert root.child("leases").listdir() == ["image.json"]  # no temporary file left

    def test_create_if_absent_never_replaces_a_written_file(self, root: Location) -> None:
        if not root.supports_conditional_create:
            pytest.skip(f"{type(root).__name__} has no conditional create (refusal checked above)")
        target = root.child("lease")
        target.write_bytes(b"written")
        assert not target.create_if_absent(b"created")
        assert target.read_bytes() == b"written"

    def test_create_if_absent_has_one_winner_among_racing_threads(self, root: Location) -> None:
        if not root.supports_conditional_create:
            pytest.skip(f"{type(root).__name__} has no conditional create")
        target = root.child("lease")
        barrier = threading.Barrier(RACERS)
        results: dict[int, bool] = {}

        def race(racer: int) -> None:
            barrier.wait()
            results[racer] = target.create_if_absent(f"racer {racer}".encode())

        threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        winners = [racer for racer, created in results.items() if created]
        assert len(results) == RACERS
        assert len(winners) == 1
        assert target.read_bytes() == f"racer {winners[0]}".encode()

    def test_create_if_absent_has_one_winner_among_racing_processes(self, root: Location) -> None:
        if not (root.supports_conditional_create and self.across_processes):
            pytest.skip(f"{type(root).__name__}: no conditional create, or a store private to one process")
        target = root.child("lease")
        context = multiprocessing.get_context("spawn")  # no fork of a process running server threads
        barrier = context.Barrier(PROCESSES, timeout=120)
        racers = [
            context.Process(target=create_in_process, args=(target.url, f"process {i}".encode(), barrier))
            for i in range(PROCESSES)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=180)
        codes = [racer.exitcode for racer in racers]
        assert codes.count(0) == 1, codes
        assert codes.count(LOST) == PROCESSES - 1, codes
        assert target.read_bytes() == f"process {codes.index(0)}".encode()
