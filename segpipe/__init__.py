"""segpipe: batch semantic segmentation of very large images."""

__version__ = "0.1.0"
