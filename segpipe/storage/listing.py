"""Input discovery: globs, folders and URLs become sorted image URLs; truths are found from a naming pattern.

Globs follow fsspec on every backend (``*`` and ``?`` stay inside one path component, ``**`` spans any number
of folders, matching is case-sensitive): ``/data/in/*.tif``, ``/data/in/**/*.ome.tif``, ``s3://bucket/in/*.tif``.
A folder or prefix names the images directly inside it (use ``folder/**/*.tif`` to descend). An image is a TIFF
(``.tif``, ``.tiff``, any case) or a Zarr folder (``.zarr``); nothing inside a Zarr folder is an input of its own,
and names starting with a dot (partial uploads, hidden files) are left out.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from segpipe.errors import ConfigError, InputError
from segpipe.storage.location import Location, location
from segpipe.storage.options import OBJECT_STORES, filesystem

SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif")  # whole-slide images that are TIFF files
IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", *SLIDE_SUFFIXES)  # .ome.tif, .ome.tiff and .ome.zarr end with these
STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", *SLIDE_SUFFIXES)
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")  # a folder holding one of these is a Zarr store
GLOB_CHARACTERS = "*?["
PLACEHOLDERS = frozenset({"dir", "stem", "name"})


def expand_inputs(pattern_or_urls: str | Sequence[str]) -> list[str]:
    """The image URLs named by a glob, a folder or prefix, or an image URL (or a list of these), sorted, each once.

    A glob or an empty folder may name no image (``[]``); a missing image, a missing local folder or a missing
    bucket is an error.

    Raises:
        InputError: a named image or folder does not exist, or a bucket cannot be reached.
    """
    items = [pattern_or_urls] if isinstance(pattern_or_urls, str) else list(pattern_or_urls)
    found: set[str] = set()
    for item in items:
        found.update(_glob(item) if is_glob(item) else _named(item))
    return sorted(found)


def expand_image_args(items: Sequence[str]) -> list[str]:
    """Command-line IMAGE arguments as image URLs, in the order given.

    A glob becomes the images it matches, a folder that is not a Zarr store the images directly inside it
    (sorted), anything else stays as it is.

    Raises:
        InputError: a glob that matches no image, or a folder that is not a Zarr store and holds no image.
    """
    images: list[str] = []
    for item in items:
        if is_glob(item):
            found = expand_inputs(item)
            if not found:
                raise InputError(f"{item}: matches no image")
        elif is_image_folder(item):
            found = expand_inputs(item)
            if not found:
                raise InputError(
                    f"{item}: a folder with no image in it (TIFF {', '.join(IMAGE_SUFFIXES)}) and not a Zarr store"
                )
        else:
            found = [item]
        images += found
    return images


def is_image_folder(url: str) -> bool:
    """Whether ``url`` is a folder (or prefix) of images: a folder, not named as an image, not a Zarr store."""
    place = location(url)
    if place.name.lower().endswith(IMAGE_SUFFIXES) or not place.is_dir():
        return False
    return not any(place.child(marker).exists() for marker in ZARR_MARKERS)


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a glob character (``*``, ``?``, ``[``)."""
    return any(character in pattern for character in GLOB_CHARACTERS)


def is_image_name(name: str) -> bool:
    """Whether a file or folder name is a TIFF or Zarr image's (and not a hidden one)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def image_stem(name: str) -> str:
    """``name`` without its image suffix: ``scene1`` for ``scene1.ome.tif``, ``scene1.tif`` or ``scene1.zarr``."""
    for suffix in STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _named(url: str) -> list[str]:
    """One image, or the images directly inside a folder or prefix."""
    place = location(url)
    if place.name.lower().endswith(IMAGE_SUFFIXES):
        if not place.exists():
            raise InputError(f"{url}: no such image")
        return [place.url]
    if place.is_dir():
        return [place.child(name).url for name in place.listdir() if is_image_name(name)]
    if place.exists():  # a file named explicitly: planning says whether it is an image
        return [place.url]
    _check_root(place, url)
    return []  # an object-store prefix with nothing under it yet


def _check_root(place: Location, named: str) -> None:
    """Check that where a listing starts exists: a local (or memory) folder, or an object store's bucket.

    On an object store a prefix with nothing under it yet is empty, not missing. ``named`` is what the user
    wrote, for the message.
    """
    if place.protocol not in OBJECT_STORES:
        if not place.is_dir():
            raise InputError(f"{named}: no such image or folder ({place.url} does not exist)")
        return
    bucket = place.path.split("/", 1)[0]
    try:
        reachable = bool(filesystem(place.protocol).exists(bucket))
    except OSError as exc:
        raise InputError(f"{named}: bucket {bucket!r} cannot be reached ({exc})") from None
    if not reachable:
        raise InputError(f"{named}: bucket {bucket!r} does not exist or cannot be reached")


def _glob(pattern: str) -> list[str]:
    """The images a glob matches, from a fresh listing (another process may have written since)."""
    place = location(pattern)
    prefix = "" if place.is_local else f"{place.protocol}://"
    root = _static_root(place.path)
    _check_root(location(prefix + root), pattern)
    fs = filesystem(place.protocol)
    fs.invalidate_cache(root)
    return [location(prefix + str(match)).url for match in fs.glob(place.path) if _is_input(str(match))]


def _static_root(path: str) -> str:
    """The longest leading part of ``path`` without a glob character (what a listing starts from)."""
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if is_glob(part))
    return "/".join(parts[:first]) or "/"


def _is_input(path: str) -> bool:
    """An image that does not lie inside a Zarr folder."""
    *folders, name = path.rstrip("/").split("/")
    return is_image_name(name) and not any(f.lower().endswith(".zarr") for f in folders)


def truth_for(image_url: str, pattern: str, require: bool = False) -> str | None:
    """The truth URL ``pattern`` names for an image, or None when nothing is there (unless ``require``).

    ``pattern`` may use ``{dir}`` (the image's folder or prefix), ``{stem}`` (its name without the image suffix)
    and ``{name}`` (its whole name): ``{dir}/{stem}_truth.tif``, ``s3://bucket/truth/{stem}.tif``.

    Raises:
        ConfigError: the pattern has no placeholder, an unknown one, or names the image itself.
        InputError: ``require`` and no truth is there.
    """
    image = location(image_url)
    truth = location(fill_pattern(pattern, image))
    if truth.url == image.url:
        raise ConfigError(f"truth pattern {pattern!r} names the image itself ({image.url})")
    if truth.exists():
        return truth.url
    if require:
        raise InputError(f"{image.url}: no truth at {truth.url} (truth pattern {pattern!r})")
    return None


def fill_pattern(pattern: str, image: Location) -> str:
    """``pattern`` with ``{dir}``, ``{stem}`` and ``{name}`` of ``image`` filled in."""
    fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    unknown = sorted(fields - PLACEHOLDERS)
    if unknown or not fields:
        raise ConfigError(
            f"truth pattern {pattern!r}: use the placeholders {{dir}}, {{stem}} and {{name}}"
            + (f" (unknown: {', '.join(repr(u) for u in unknown)})" if unknown else "")
        )
    folder = image.parent.url if image.parent != image else image.url
    return pattern.format(dir=folder, stem=image_stem(image.name), name=image.name)


def pair_truths(images: Iterable[str], pattern: str | None, require: bool = False) -> list[tuple[str, str | None]]:
    """Each image with its truth (None without one); an input that is another input's truth is left out.

    A glob such as ``in/*.tif`` also matches ``in/x_truth.tif``.
    """
    found = list(images)
    if pattern is None:
        return [(image, None) for image in found]
    pairs = [(image, truth_for(image, pattern)) for image in found]
    truths = {truth for _, truth in pairs if truth is not None}
    kept = [(image, truth) for image, truth in pairs if image not in truths]
    if require:
        for image, truth in kept:
            if truth is None:
                raise InputError(f"{image}: no truth at {fill_pattern(pattern, location(image))}")
    return kept


__all__ = [
    "expand_image_args",
    "expand_inputs",
    "fill_pattern",
    "image_stem",
    "is_glob",
    "is_image_folder",
    "is_image_name",
    "pair_truths",
    "truth_for",
]
