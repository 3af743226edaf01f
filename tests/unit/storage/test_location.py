"""Locations behave the same on a local folder, ``memory://`` and S3 (a real moto server): bytes, JSON, listing,
removal, identity, zarr stores, writability checks (segpipe/storage/; the per-backend suite is test_backends.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from segpipe.errors import ConfigError, OutputError
from segpipe.storage import InputIdentity, LocalLocation, create_array, location, open_array, open_group, public_url


def test_write_then_read_bytes_and_json(store_url: str) -> None:
    root = location(store_url)
    target = root.child("a", "b.bin")
    target.write_bytes(b"first")
    target.write_bytes(b"second")  # replaces
    assert target.read_bytes() == b"second"
    root.child("c.json").write_json({"iou": [0.5, None], "name": "x"})
    assert root.child("c.json").read_json() == {"iou": [0.5, None], "name": "x"}
    assert root.listdir() == ["a", "c.json"]  # no temporary files left beside them
    assert root.child("a").listdir() == ["b.bin"]


def test_a_failed_staged_write_leaves_the_old_content(store_url: str) -> None:
    target = location(store_url).child("file.bin")
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), target.staged_write() as local_file:
        Path(local_file).write_bytes(b"half of the new")
        raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"old"
    assert location(store_url).listdir() == ["file.bin"]


def test_listdir_exists_is_dir_and_remove(store_url: str) -> None:
    root = location(store_url)
    assert not root.exists(), "a fresh store must not exist yet"
    assert root.listdir() == []
    for name in ("x/1", "x/2", "x/sub/3", "y"):
        root.child(name).write_bytes(b"")
    assert root.exists(), "written children must make the root exist"
    assert root.is_dir(), "a root with children must be a directory"
    assert not root.child("y").is_dir(), "a file must not be a directory"
    assert root.child("x").listdir() == ["1", "2", "sub"]
    root.child("x").remove()
    root.child("x").remove()  # missing is fine
    root.child("y").remove()
    assert not root.child("x").exists(), "remove() left x behind"
    assert not root.child("x", "sub", "3").exists(), "remove() left x/sub/3 behind"
    assert root.listdir() == []


def test_a_bucket_is_never_removed_whole(s3_bucket: str) -> None:
    location(f"{s3_bucket}/keep").write_bytes(b"x")
    with pytest.raises(ValueError, match="whole bucket"):
        location(s3_bucket).remove()
    assert location(f"{s3_bucket}/keep").read_bytes() == b"x"


def test_missing_objects_raise_file_not_found(store_url: str) -> None:
    missing = location(store_url).child("nope.bin")
    with pytest.raises(FileNotFoundError):
        missing.read_bytes()
    with pytest.raises(FileNotFoundError):
        missing.identity()


def test_identity_changes_with_content_and_only_then(store_url: str) -> None:
    target = location(store_url).child("image.tif")
    target.write_bytes(b"one")
    first = target.identity()
    assert isinstance(first, InputIdentity)
    assert first.url == target.url
    assert first.size == 3
    assert first.version.split(":")[0] in ("etag", "mtime_ns")
    assert target.identity() == first  # untouched: same identity
    target.write_bytes(b"one two")
    assert target.identity() != first
    assert target.identity().size == 7


def test_s3_identity_is_the_etag_so_a_same_size_rewrite_changes_it(s3_bucket: str) -> None:
    target = location(f"{s3_bucket}/a.bin")
    target.write_bytes(b"aaaa")
    before = target.identity()
    target.write_bytes(b"bbbb")
    after = target.identity()
    assert before.version.startswith("etag:")
    assert before.size == after.size == 4
    assert before.version != after.version


def test_identity_of_a_zarr_directory_covers_its_files(store_url: str) -> None:
    array_url = location(store_url).child("input.zarr")
    array = create_array(array_url, shape=(8, 8), chunks=(4, 4), dtype="uint8", fill_value=0)
    before = array_url.identity()
    assert before.version.startswith("tree:")
    assert before.size > 0
    assert array_url.identity() == before
    array[4:, 4:] = 7  # writes a chunk the all-zero array lacked
    after = array_url.identity()
    assert after.size > before.size
    assert after.version != before.version


def test_zarr_round_trip_through_the_store(store_url: str) -> None:
    where = location(store_url).child("out.zarr", "mask")
    data = np.arange(35 * 29, dtype=np.uint16).reshape(35, 29)
    array = zarr.create_array(where.zarr_store(), shape=data.shape, chunks=(8, 8), dtype=data.dtype)
    array[:] = data
    np.testing.assert_array_equal(zarr.open_array(where.zarr_store(read_only=True), mode="r")[:], data)
    np.testing.assert_array_equal(open_array(where.url)[5:20, 3:11], data[5:20, 3:11])
    open_array(where, mode="r+")[:8, :8] = 0
    assert int(open_array(where)[:8, :8].max()) == 0
    group = open_group(location(store_url).child("out.zarr"), mode="a")
    group.attrs["segpipe"] = {"infer_key": "k"}
    assert open_group(location(store_url).child("out.zarr").url).attrs["segpipe"] == {"infer_key": "k"}


def test_check_writable_accepts_a_new_location(store_url: str) -> None:
    location(store_url).child("not", "yet", "there").check_writable()
    assert location(store_url).listdir() == []  # the probe leaves nothing behind


def test_check_writable_refuses_a_file_as_parent_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError) as info:
        location(tmp_path / "file" / "out").check_writable()
    assert "not a writable directory" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not a writable directory"):
            location(locked / "out").check_writable()
    finally:
        locked.chmod(0o700)


def test_check_writable_refuses_a_missing_bucket_in_one_line(s3_server: str) -> None:
    with pytest.raises(OutputError) as info:
        location("s3://segpipe-no-such-bucket/out").check_writable()
    message = str(info.value)
    assert message.startswith("s3://segpipe-no-such-bucket/out: ")
    assert "bucket" in message
    assert "\n" not in message


def test_remove_partial_writes_deletes_only_zarr_debris(tmp_path: Path) -> None:
    """A kill -9 inside zarr's LocalStore write leaves ``<stem>.<32 hex>.partial`` files, one inside
    ``staged_write`` a ``.<name>.<32 hex>.tmp``; only those go."""
    store = location(tmp_path / "store.zarr")
    array = create_array(store.child("0"), shape=(4, 4), chunks=(2, 2), dtype="uint8")
    array[:] = 3
    debris = [
        store.child("0", "c", "0", "0.0123456789abcdef0123456789abcdef.partial"),
        store.child("0", "zarr.fedcba9876543210fedcba9876543210.partial"),
    ]
    debris.append(store.child(".done.json.00112233445566778899aabbccddeeff.tmp"))  # staged_write's own
    keep = [store.child("0", "notes.partial"), store.child("0", "c", "1.0123.partial"), store.child("x.tmp")]
    for item in debris + keep:
        item.write_bytes(b"half")
    assert store.remove_partial_writes() == 3
    assert not any(item.exists() for item in debris), [item.url for item in debris if item.exists()]
    assert all(item.exists() for item in keep), [item.url for item in keep if not item.exists()]
    assert int(open_array(store.child("0"))[:].sum()) == 3 * 16
    assert store.remove_partial_writes() == 0
    assert location("memory://segpipe-test/none").remove_partial_writes() == 0


def test_urls_are_normalised_and_never_hold_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert location("relative/x.tif").url == str(tmp_path / "relative" / "x.tif")
    assert location(f"file://{tmp_path}/a/").url == str(tmp_path / "a")
    assert location(tmp_path / "a") == location(str(tmp_path / "a")) == LocalLocation(f"{tmp_path}/a")
    assert location("s3://bucket/prefix/").url == "s3://bucket/prefix"
    assert location("memory:///a//b").url == "memory://a/b"
    assert location("s3://bucket/a").child("b", "c/").url == "s3://bucket/a/b/c"
    assert location("s3://bucket/a/b").parent.url == "s3://bucket/a"
    assert location("s3://bucket").name == "bucket"
    assert (location("s3://b/k").protocol, location("s3://b/k").is_local, location(tmp_path).protocol) == (
        "s3",
        False,
        "file",
    )
    assert pickle.loads(pickle.dumps(location("s3://bucket/a"))) == location("s3://bucket/a")
    assert public_url("s3://AKIA:secret@bucket/key") == "s3://bucket/key"
    assert public_url("https://user:pw@host:9000/x?y=1") == "https://host:9000/x?y=1"
    assert public_url("/plain/path") == "/plain/path"
    with pytest.raises(ConfigError) as info:
        location("s3://AKIA:secret@bucket/key")
    assert "secret" not in str(info.value)
    assert "AWS_ACCESS_KEY_ID" in str(info.value)
    with pytest.raises(ConfigError, match="unknown storage protocol"):
        location("nosuchproto://x")
