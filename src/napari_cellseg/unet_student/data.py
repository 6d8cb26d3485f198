"""Training data for the student: folder layouts, the train/validation split, augmentation.

Layouts understood by :func:`discover_dataset`:

* the seed's time-lapse layout, ``ROOT/<experiment>_raw_data/PosNNN/*.tif`` with the masks in
  ``ROOT/<experiment>_masks/PosNNN/*.tif``. The split is by position folder: a position whose
  number ends in one of ``val_suffixes`` (default 09, 10, 19, 20) is validation.
* ``ROOT/images/`` and ``ROOT/labels/`` with matching file names (stems). An image is in
  validation when the first byte of sha1(stem) is below 38 (about 15 %, fixed and independent of
  file order; the same rule as the shipped nuclei model's DSB2018 split).

Images are normalised exactly as the segmentation pipeline does (per-channel 1st-99.8th
percentile to uint8, grey repeated to RGB), so the student sees at training what it sees later.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_VAL_SUFFIXES = ("09", "10", "19", "20")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_POSITION = re.compile(r"^pos(\d+)$", re.IGNORECASE)


class DatasetLayoutError(ValueError):
    """A training folder does not have a layout the student understands; the message says what was expected."""


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, normalised as at inference
    labels: np.ndarray  # (H, W) int32 instance labels


def is_validation_name(stem: str) -> bool:
    """The fixed hash split: about 15 % of names are validation."""
    return hashlib.sha1(stem.encode()).digest()[0] < 38


def model_input(image: np.ndarray) -> np.ndarray:
    """A 2-D grey or RGB(A) image -> (H, W, 3) uint8, normalised as the pipeline normalises a frame."""
    from ..core.normalize import ImageInputError, model_rgb, to_stack_of_frames

    frames, layout = to_stack_of_frames(np.asarray(image))
    if layout.stack_shape:
        raise ImageInputError(f"expected one 2-D image, got a stack of shape {np.shape(image)}")
    return model_rgb(frames)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def position_number(name: str) -> int | None:
    match = _POSITION.match(name)
    return int(match.group(1)) if match else None


def is_validation_position(name: str, val_suffixes=DEFAULT_VAL_SUFFIXES) -> bool:
    number = position_number(name)
    if number is None:
        return False
    digits = f"{number:03d}"
    return any(digits.endswith(str(s)) for s in val_suffixes)


def _match_masks(images: list[Path], masks: list[Path], where: Path) -> list[tuple[Path, Path]]:
    """Pair images with masks by stem (a mask stem may add a suffix such as '_masks'), else by order."""
    by_stem = {m.stem: m for m in masks}
    pairs = []
    for image in images:
        mask = by_stem.get(image.stem)
        if mask is None:
            candidates = [m for m in masks if m.stem.startswith(image.stem)]
            mask = candidates[0] if len(candidates) == 1 else None
        pairs.append((image, mask))
    if all(m is not None for _, m in pairs):
        return pairs
    if len(images) == len(masks):  # different naming schemes: same sorted order
        return list(zip(images, masks))
    raise DatasetLayoutError(
        f"{where}: {len(images)} images but {len(masks)} masks, and their names do not match"
    )


def discover_seed_layout(root: str | Path, val_suffixes=DEFAULT_VAL_SUFFIXES):
    """(train pairs, val pairs) of (image path, mask path) in the seed layout; raises if absent."""
    root = Path(root)
    raw_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("_raw_data"))
    if not raw_dirs:
        raise DatasetLayoutError(f"{root}: no '<experiment>_raw_data' folder")
    train, val = [], []
    for raw in raw_dirs:
        experiment = raw.name[: -len("_raw_data")]
        masks_dir = root / f"{experiment}_masks"
        if not masks_dir.is_dir():
            raise DatasetLayoutError(f"{raw}: the masks folder {masks_dir.name} is missing beside it")
        positions = sorted(p for p in raw.iterdir() if p.is_dir() and position_number(p.name) is not None)
        if not positions:
            raise DatasetLayoutError(f"{raw}: no 'PosNNN' position folders inside")
        for pos in positions:
            mask_pos = masks_dir / pos.name
            if not mask_pos.is_dir():
                raise DatasetLayoutError(f"{pos}: no matching mask folder {mask_pos}")
            pairs = _match_masks(_images_in(pos), _images_in(mask_pos), pos)
            (val if is_validation_position(pos.name, val_suffixes) else train).extend(pairs)
    return train, val


def discover_pairs(root: str | Path):
    """(train pairs, val pairs) from ROOT/images and ROOT/labels with the hash split."""
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise DatasetLayoutError(f"{root}: expected 'images/' and 'labels/' folders")
    images, labels = _images_in(images_dir), _images_in(labels_dir)
    by_stem = {p.stem: p for p in labels}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise DatasetLayoutError(f"{labels_dir}: no label file for {len(missing)} images, e.g. {missing[0]}")
    pairs = [(p, by_stem[p.stem]) for p in images]
    return ([q for q in pairs if not is_validation_name(q[0].stem)],
            [q for q in pairs if is_validation_name(q[0].stem)])


def discover_dataset(root: str | Path, val_suffixes=DEFAULT_VAL_SUFFIXES):
    """Either layout; the error names both when neither is there."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: no such folder")
    if (root / "images").is_dir():
        train, val = discover_pairs(root)
    elif any(p.is_dir() and p.name.endswith("_raw_data") for p in root.iterdir()):
        train, val = discover_seed_layout(root, val_suffixes)
    else:
        raise DatasetLayoutError(
            f"{root}: expected either 'images/' + 'labels/' folders with matching file names, or the "
            "time-lapse layout '<experiment>_raw_data/PosNNN/*.tif' + '<experiment>_masks/PosNNN/*.tif'"
        )
    if not train:
        raise DatasetLayoutError(f"{root}: every image fell into the validation split; nothing to train on")
    return train, val


def sample_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def load_sample(image_path: Path, label_path: Path, name: str | None = None) -> Sample:
    from ..core.io import read_image

    image = model_input(read_image(image_path))
    labels = np.asarray(read_image(label_path))
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):  # a colour-saved label image: use one channel
        labels = labels[..., 0]
    if labels.shape != image.shape[:2]:
        raise DatasetLayoutError(f"{label_path}: labels of shape {labels.shape} for an image of {image.shape[:2]}")
    return Sample(name or sample_name(image_path), image, labels.astype(np.int32))


def samples_from_arrays(images, labels, names=None) -> list[Sample]:
    """In-memory pairs (e.g. napari Image + Labels layers, 2-D or stacks of 2-D frames)."""
    out = []
    for k, (image, label) in enumerate(zip(images, labels)):
        image, label = np.asarray(image), np.asarray(label)
        base = names[k] if names else f"array{k}"
        if label.ndim == 2:
            out.append(Sample(base, model_input(image), label.astype(np.int32)))
            continue
        for t in range(label.shape[0]):  # a stack: one sample per frame
            out.append(Sample(f"{base}[{t}]", model_input(image[t]), label[t].astype(np.int32)))
    return out


# ---------------------------------------------------------------- augmentation and crops

def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    h, w = array.shape[:2]
    if h >= size and w >= size:
        return array
    pad = [(0, max(0, size - h)), (0, max(0, size - w))] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad)


def random_crop(sample: Sample, crop: int, rng: np.random.Generator, scale_jitter=0.2):
    """A crop of ``crop`` pixels, seen at a random scale in [1 - j, 1 + j], flipped and rotated by 90s."""
    import cv2

    scale = float(rng.uniform(1 - scale_jitter, 1 + scale_jitter)) if scale_jitter else 1.0
    window = max(8, int(round(crop / scale)))
    image, labels = _pad_to(sample.image, window), _pad_to(sample.labels, window)
    h, w = labels.shape
    y0, x0 = rng.integers(0, h - window + 1), rng.integers(0, w - window + 1)
    image = image[y0:y0 + window, x0:x0 + window]
    labels = labels[y0:y0 + window, x0:x0 + window]
    if window != crop:
        image = cv2.resize(image, (crop, crop), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels.astype(np.float32), (crop, crop), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    k = int(rng.integers(4))
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def intensity_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) in ~[0, 1] with gamma, contrast, offset and noise jitter."""
    x = image.astype(np.float32) / 255.0
    x = x ** float(rng.uniform(0.7, 1.4))
    x = x * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.08, 0.08))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape).astype(np.float32)
    return np.clip(x, 0, 1).transpose(2, 0, 1)


def to_network(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]: the network's input at inference."""
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)


def validation_crops(samples: list[Sample], crop: int, per_image: int = 2, limit: int = 200):
    """Fixed crops (no augmentation) of the validation images: list of (image uint8, labels)."""
    from ..core.tiling import tile_grid

    crops = []
    for sample in samples:
        h, w = sample.labels.shape
        tiles = tile_grid(h, w, crop, 0)
        step = max(1, len(tiles) // per_image)
        for t in tiles[::step][:per_image]:
            crops.append((_pad_to(sample.image[t.slices], crop), _pad_to(sample.labels[t.slices], crop)))
    if len(crops) > limit:
        crops = [crops[i] for i in np.linspace(0, len(crops) - 1, limit).astype(int)]
    return crops


def split_in_memory(image: np.ndarray, labels: np.ndarray | None = None, name: str = "layer",
                    val_share: float = 0.2):
    """One image (or a stack of frames) from the viewer -> (train, val) lists of (name, image[, labels]).

    A stack: every frame whose index k has ``k % 5 == 4`` is validation (evenly spread over time).
    A single 2-D image: its bottom ``val_share`` of rows is validation, the rest training.
    """
    image = np.asarray(image)
    is_rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    single = image.ndim == 2 or is_rgb
    train, val = [], []
    if single:
        h = image.shape[0]
        cut = int(round(h * (1 - val_share)))
        if cut < 16 or h - cut < 16:
            raise ValueError(f"image of {h} rows is too small to split into training and validation parts")
        parts = [("top", slice(0, cut), train), ("bottom", slice(cut, h), val)]
        for part, rows, into in parts:
            item = (f"{name}[{part}]", image[rows]) + (() if labels is None else (np.asarray(labels)[rows],))
            into.append(item)
        return train, val
    frames = image.reshape(-1, *image.shape[-(3 if image.shape[-1] in (3, 4) and image.ndim > 3 else 2):])
    label_frames = None if labels is None else np.asarray(labels).reshape(-1, *np.asarray(labels).shape[-2:])
    if len(frames) < 2:
        return split_in_memory(frames[0], None if label_frames is None else label_frames[0], name, val_share)
    for k, frame in enumerate(frames):
        item = (f"{name}[{k}]", frame) + (() if label_frames is None else (label_frames[k],))
        (val if k % 5 == 4 or (len(frames) < 5 and k == len(frames) - 1) else train).append(item)
    return train, val
