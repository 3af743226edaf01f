"""Find the label array a user means, and its class names.

A segpipe OME-Zarr folder stands for its ``labels/mask/0``, and the class names written in its NGFF
``image-label`` metadata name the classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import zarr
from zarr.errors import GroupNotFoundError, NodeTypeValidationError

from segpipe.errors import InputError

MASK_LEVEL0 = "labels/mask/0"


@dataclass(frozen=True)
class LabelImage:
    """A label array's path and the class names found in its metadata (empty when it has none)."""

    path: str
    class_names: tuple[str, ...] = ()

    def names_for(self, classes: int) -> list[str]:
        """One name per class: the stored names where there are enough, else ``class_<k>``."""
        if len(self.class_names) >= classes:
            return list(self.class_names[:classes])
        return [f"class_{k}" for k in range(classes)]


def resolve_label_image(path: str) -> LabelImage:
    """The label array at ``path``, with its class names when its metadata has them.

    ``path`` itself (a TIFF or Zarr array), or, for an OME-Zarr image group holding ``labels/mask``, its level-0
    mask with the class names of its ``image-label`` properties.

    Raises:
        InputError: a Zarr group with no label mask inside (one line saying what to pass).
    """
    if not os.path.isdir(path):
        return LabelImage(path)
    try:
        zarr.open_array(path, mode="r")
        return LabelImage(path, _class_names(os.path.dirname(path.rstrip("/"))))
    except (NodeTypeValidationError, FileNotFoundError, ValueError):
        pass
    mask = os.path.join(path, MASK_LEVEL0)
    if not os.path.isdir(mask):
        raise InputError(f"{path}: a Zarr group without {MASK_LEVEL0}; pass the label array itself")
    return LabelImage(mask, _class_names(os.path.join(path, "labels", "mask")))


def _class_names(group_path: str) -> tuple[str, ...]:
    """Class names from an NGFF label group's ``image-label.properties`` (empty if there are none)."""
    try:
        attrs: dict[str, Any] = dict(zarr.open_group(group_path, mode="r").attrs.asdict())
    except (GroupNotFoundError, NodeTypeValidationError, FileNotFoundError, ValueError):
        return ()
    properties = (attrs.get("ome") or {}).get("image-label", {}).get("properties") or []
    named = {int(p["label-value"]): str(p["class"]) for p in properties if "label-value" in p and "class" in p}
    return tuple(named[k] for k in range(len(named))) if set(named) == set(range(len(named))) else ()
