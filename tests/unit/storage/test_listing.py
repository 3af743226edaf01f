"""Input discovery behaves the same on a local folder, ``memory://`` and S3 (a real moto server): globs, folders and
prefixes, explicit URLs, truth patterns (segpipe/storage/listing.py)."""

from __future__ import annotations

import pytest

from segpipe.errors import ConfigError, InputError
from segpipe.storage import location
from segpipe.storage.listing import expand_inputs, image_stem, pair_truths, truth_for

TREE = (
    "in/b.tif",
    "in/a.ome.tif",
    "in/C.TIFF",
    "in/a_truth.tif",
    "in/notes.txt",
    "in/.partial.tif",
    "in/scene.zarr/zarr.json",
    "in/scene.zarr/0/c/0/0",
    "in/scene.zarr/0/inner.tif",
    "in/sub/d.tif",
    "in/sub/deep/e.tif",
    "truth/b.tif",
)


@pytest.fixture
def tree(store_url: str) -> str:
    """A folder of inputs on each backend (images, a truth, a Zarr folder, hidden and other files, subfolders)."""
    root = location(store_url)
    for name in TREE:
        root.child(name).write_bytes(b"x")
    return root.url


def _names(urls: list[str], root: str) -> list[str]:
    return [url[len(root) + 1 :] for url in urls]


def test_a_folder_or_prefix_names_the_images_directly_inside(tree: str) -> None:
    expected = ["in/C.TIFF", "in/a.ome.tif", "in/a_truth.tif", "in/b.tif", "in/scene.zarr"]
    assert _names(expand_inputs(f"{tree}/in"), tree) == expected
    assert _names(expand_inputs(f"{tree}/in/"), tree) == expected


def test_globs_match_on_every_backend_and_never_inside_a_zarr(tree: str) -> None:
    assert _names(expand_inputs(f"{tree}/in/*.tif"), tree) == ["in/a.ome.tif", "in/a_truth.tif", "in/b.tif"]
    assert _names(expand_inputs(f"{tree}/in/**/*.tif"), tree) == [
        "in/a.ome.tif",
        "in/a_truth.tif",
        "in/b.tif",
        "in/sub/d.tif",
        "in/sub/deep/e.tif",
    ]  # not in/scene.zarr/0/inner.tif, not the hidden .partial.tif
    assert _names(expand_inputs(f"{tree}/in/*.zarr"), tree) == ["in/scene.zarr"]
    assert _names(expand_inputs(f"{tree}/in/?.tif"), tree) == ["in/b.tif"]
    assert expand_inputs(f"{tree}/in/*.png") == []


def test_lists_of_urls_and_patterns_are_merged_sorted_and_deduplicated(tree: str) -> None:
    found = expand_inputs([f"{tree}/in/sub/d.tif", f"{tree}/in/b.tif", f"{tree}/in/*.tif"])
    assert _names(found, tree) == ["in/a.ome.tif", "in/a_truth.tif", "in/b.tif", "in/sub/d.tif"]
    assert found == expand_inputs([f"{tree}/in/*.tif", f"{tree}/in/sub/d.tif"])  # order of the request: no matter


def test_an_empty_folder_or_prefix_has_no_inputs(store_url: str) -> None:
    location(store_url).child("empty", "notes.txt").write_bytes(b"")
    assert expand_inputs(f"{store_url}/empty") == []
    assert expand_inputs(f"{store_url}/empty/*.tif") == []


def test_a_missing_image_or_local_folder_is_an_error(tmp_path) -> None:
    with pytest.raises(InputError, match="no such image"):
        expand_inputs(str(tmp_path / "missing.tif"))
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs(str(tmp_path / "missing-folder"))
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs(str(tmp_path / "missing-folder" / "*.tif"))


def test_on_s3_a_prefix_not_written_yet_is_empty_but_a_missing_bucket_is_an_error(s3_bucket: str) -> None:
    assert expand_inputs(f"{s3_bucket}/not-yet") == []
    assert expand_inputs(f"{s3_bucket}/not-yet/*.tif") == []
    with pytest.raises(InputError, match="bucket 'segpipe-no-such-bucket'"):
        expand_inputs("s3://segpipe-no-such-bucket/in/*.tif")
    with pytest.raises(InputError, match="no such image"):
        expand_inputs(f"{s3_bucket}/in/missing.tif")


def test_a_glob_sees_objects_written_after_an_earlier_listing(s3_bucket: str) -> None:
    location(f"{s3_bucket}/in/a.tif").write_bytes(b"x")
    assert _names(expand_inputs(f"{s3_bucket}/in/*.tif"), s3_bucket) == ["in/a.tif"]
    location(f"{s3_bucket}/in/b.tif").write_bytes(b"x")  # s3fs caches listings: discovery must not
    assert _names(expand_inputs(f"{s3_bucket}/in/*.tif"), s3_bucket) == ["in/a.tif", "in/b.tif"]
    assert _names(expand_inputs(f"{s3_bucket}/in"), s3_bucket) == ["in/a.tif", "in/b.tif"]


def test_truth_patterns_fill_dir_stem_and_name(tree: str) -> None:
    assert truth_for(f"{tree}/in/a.ome.tif", "{dir}/{stem}_truth.tif") == f"{tree}/in/a_truth.tif"
    assert truth_for(f"{tree}/in/b.tif", tree + "/truth/{name}") == f"{tree}/truth/b.tif"
    assert truth_for(f"{tree}/in/b.tif", "{dir}/../truth/{stem}.tif") == f"{tree}/truth/b.tif"
    assert truth_for(f"{tree}/in/b.tif", "{dir}/{stem}_truth.tif") is None  # nightly data usually has none
    with pytest.raises(InputError, match="no truth at .*b_truth.tif"):
        truth_for(f"{tree}/in/b.tif", "{dir}/{stem}_truth.tif", require=True)


@pytest.mark.parametrize(
    ("pattern", "fault"),
    [
        ("truth.tif", "placeholders"),
        ("{dir}/{base}.tif", "unknown: 'base'"),
        ("{}.tif", "unknown"),
        ("{dir}/{name}", "itself"),
    ],
)
def test_bad_truth_patterns_are_refused(tmp_path, pattern: str, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        truth_for(str(tmp_path / "a.tif"), pattern)


def test_pairing_leaves_out_inputs_that_are_truths_of_other_inputs(tree: str) -> None:
    pairs = pair_truths(expand_inputs(f"{tree}/in/*.tif"), "{dir}/{stem}_truth.tif")
    assert [(_names([i], tree), t and _names([t], tree)) for i, t in pairs] == [
        (["in/a.ome.tif"], ["in/a_truth.tif"]),
        (["in/b.tif"], None),
    ]
    assert pair_truths([f"{tree}/in/b.tif"], None) == [(f"{tree}/in/b.tif", None)]
    with pytest.raises(InputError, match="b.tif: no truth"):
        pair_truths(expand_inputs(f"{tree}/in/*.tif"), "{dir}/{stem}_truth.tif", require=True)


@pytest.mark.parametrize(
    ("name", "stem"),
    [("a.ome.tif", "a"), ("a.OME.TIFF", "a"), ("a.tif", "a"), ("a.ome.zarr", "a"), ("a.zarr", "a"), ("a.b.tif", "a.b")],
)
def test_image_stem(name: str, stem: str) -> None:
    assert image_stem(name) == stem
