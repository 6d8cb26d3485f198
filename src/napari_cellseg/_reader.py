"""Reader: TIFF images, and label images (``*_labels.tif``/``*_masks.tif``) as Labels layers."""
from __future__ import annotations

from pathlib import Path

LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")


def napari_get_reader(path):
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    path = Path(str(path))
    if path.is_dir() and (path / "data.yaml").is_file() or path.name == "data.yaml":
        return read_dataset
    if path.suffix.lower() == ".json" and _looks_like_coco(path):
        return read_dataset
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    return read_tiff


def _looks_like_coco(path: Path) -> bool:
    try:
        head = path.open().read(4096)
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head


def read_dataset(path):
    """A YOLO (data.yaml or its folder) or COCO (json) dataset: one image + labels layer pair per sample."""
    from .core.datasets import read_coco_dataset, read_yolo_dataset

    path = Path(path[0] if isinstance(path, list) else path)
    samples = read_coco_dataset(path) if path.suffix.lower() == ".json" else read_yolo_dataset(
        path / "data.yaml" if path.is_dir() else path)
    layers = []
    for name, image, labels in samples:
        layers.append((image, {"name": name}, "image"))
        layers.append((labels, {"name": f"{name} labels"}, "labels"))
    return layers


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
