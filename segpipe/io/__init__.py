"""The only modules that touch disk: TIFF and Zarr readers, Zarr writers."""

from segpipe.io.images import ImageSource, open_image

__all__ = ["ImageSource", "open_image"]
