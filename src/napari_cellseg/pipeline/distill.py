"""Distillation: a teacher segments unlabeled images, the student learns its masks.

``distill_iter`` runs any loaded backend (the shipped nuclei model, a YOLO or Mask R-CNN
checkpoint, an ensemble, the classical model) through the plugin's own tiled
``segment_iter`` over the images, yielding progress per tile, caches the teacher's masks as
TIFFs in ``cache_dir`` (reused when the same teacher and settings run again), then delegates to
:func:`train_iter`. Masks already on disk (e.g. from Omnipose or Cellpose) need no teacher:
use ``train_iter`` with :func:`data.discover_dataset`.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Generator
from pathlib import Path

import numpy as np

from ..unet_student.data import (
    DEFAULT_VAL_SUFFIXES, IMAGE_SUFFIXES, DatasetLayoutError, Sample, _images_in, is_validation_name,
    is_validation_position, model_input, position_number, sample_name,
)
from ..core.progress import Progress
from ..unet_student.train import StudentResult, train_iter


def split_image_folder(folder: str | Path, val_suffixes=DEFAULT_VAL_SUFFIXES) -> tuple[list[Path], list[Path]]:
    """Unlabeled images -> (train, val) paths.

    Seed layout (``<experiment>_raw_data/PosNNN/*.tif``, masks not needed): split by position
    folder; a folder of PosNNN folders: the same; a flat folder: the fixed sha1 hash split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder}: no such folder")
    raw_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.endswith("_raw_data"))
    position_parents = raw_dirs or ([folder] if any(
        p.is_dir() and position_number(p.name) is not None for p in folder.iterdir()) else [])
    train, val = [], []
    if position_parents:
        for parent in position_parents:
            for pos in sorted(p for p in parent.iterdir() if p.is_dir() and position_number(p.name) is not None):
                (val if is_validation_position(pos.name, val_suffixes) else train).extend(_images_in(pos))
    else:
        if (folder / "images").is_dir():
            folder = folder / "images"
        for path in _images_in(folder):
            (val if is_validation_name(path.stem) else train).append(path)
    if not train:
        raise DatasetLayoutError(
            f"{folder}: no training images found; expected image files ({', '.join(IMAGE_SUFFIXES)}) in the "
            "folder, in its 'images/' folder, or in '<experiment>_raw_data/PosNNN/' folders")
    return train, val


def _cache_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".tif"


def teacher_labels_iter(teacher, images: list, cache_dir: str | Path, segment_options: dict | None = None,
                        ) -> Generator[Progress, None, list[np.ndarray]]:
    """Teacher labels for ``images`` ((name, path-or-array) pairs), cached in ``cache_dir``."""
    from ..core.io import read_image, write_labels
    from .segment import run, segment_iter

    # the teacher's own outlines unless the caller asks for its contour refinement ({"refine": "auto"})
    options = {"refine": None, **(segment_options or {})}
    cache_dir = Path(cache_dir)
    manifest = {"teacher": Path(teacher.info.path).name if teacher.info.path else teacher.info.backend,
                "backend": teacher.info.backend, "sha256": teacher.info.sha256, "options": options}
    manifest_path = cache_dir / "teacher.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) != manifest:
        shutil.rmtree(cache_dir)  # another teacher or other settings: its masks do not apply
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    labels = []
    for k, (name, source) in enumerate(images):
        cached = cache_dir / _cache_name(name)
        if cached.is_file():
            labels.append(np.asarray(read_image(cached)).astype(np.int32))
        else:
            image = read_image(source) if isinstance(source, (str, Path)) else source
            result = run(segment_iter(image, teacher, **options))
            if getattr(result, "task", None) == "detect":
                raise ValueError(f"{teacher.info.path}: a box detector cannot teach masks to the U-Net student")
            write_labels(cached, result.labels)
            labels.append(result.labels.astype(np.int32))
        yield Progress(k + 1, len(images), 0, 0,
                       f"teacher: image {k + 1}/{len(images)} ({int(labels[-1].max())} objects)",
                       {"phase": "teacher"}, unit="image")
    return labels


def _named(images) -> list:
    out = []
    for k, item in enumerate(images):
        if isinstance(item, (str, Path)):
            out.append((sample_name(Path(item)), Path(item)))
        else:
            out.append(tuple(item) if isinstance(item, tuple) else (f"array{k}", item))
    return out


def distill_iter(teacher, train_images: list, val_images: list, out: str | Path, *,
                 cache_dir: str | Path | None = None, segment_options: dict | None = None,
                 teacher_name: str | None = None, **train_kwargs) -> Generator[Progress, None, StudentResult]:
    """Teacher masks for train and validation images, then :func:`train_iter` on them.

    Images: paths or (name, array) pairs. ``cache_dir`` defaults to ``<out stem>_teacher_masks``
    beside ``out``.
    """
    from ..core.io import read_image

    out = Path(out)
    cache_dir = Path(cache_dir or out.with_name(out.stem + "_teacher_masks"))
    train_named, val_named = _named(train_images), _named(val_images)
    every = train_named + val_named
    labels = yield from teacher_labels_iter(teacher, every, cache_dir, segment_options)
    samples = []
    for (name, source), label in zip(every, labels):
        image = read_image(source) if isinstance(source, Path) else source
        samples.append(Sample(name, model_input(image), label))
    info = {"source": "distilled", "teacher": teacher_name or Path(str(teacher.info.path or "")).name
            or teacher.info.backend, "teacher_backend": teacher.info.backend,
            "teacher_sha256": teacher.info.sha256, "teacher_settings": dict(segment_options or {})}
    info.update(train_kwargs.pop("info", None) or {})
    result = yield from train_iter(samples[:len(train_named)], samples[len(train_named):], out,
                                   info=info, **train_kwargs)
    return result
