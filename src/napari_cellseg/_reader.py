"""Reader: TIFF images, and label images (``*_labels.tif``/``*_masks.tif``) as Labels layers."""
from __future__ import annotations

from pathlib import Path

LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")


def napari_get_reader(path):
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    if Path(str(path)).suffix.lower() not in (".tif", ".tiff"):
        return None
    return read_tiff


def read_tiff(path):
    from .core.io import read_image

    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        p = Path(p)
        data = read_image(p)
        if p.stem.lower().endswith(LABEL_SUFFIXES) and data.dtype.kind in "iub":
            layers.append((data, {"name": p.stem}, "labels"))
        else:
            layers.append((data, {"name": p.stem}, "image"))
    return layers
