"""Reading images and writing results. Every output is written atomically."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_SUFFIXES


class ImageReadError(ValueError):
    """An input file is missing, unreadable or not an image."""


# TIFFs whose pixels exceed this are opened lazily (dask over tifffile's zarr store)
LAZY_BYTES = 1 << 30


def read_image(path: str | os.PathLike, lazy: bool | None = None):
    """Read a TIFF (tifffile) or PNG/JPEG image, unchanged in type.

    ``lazy``: return a dask array that reads only the tiles asked for (TIFF only);
    ``None`` decides by size (more than ``LAZY_BYTES`` of pixels). Inputs are only read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            if lazy is None:
                with tifffile.TiffFile(path) as tif:
                    series = tif.series[0]
                    lazy = int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize > LAZY_BYTES
            if lazy:
                import dask.array as da
                import zarr

                return da.from_zarr(zarr.open(tifffile.imread(path, aszarr=True), mode="r"))
            return tifffile.imread(path)
        if suffix in PLAIN_SUFFIXES:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("I;16", "I;16B", "I;16L"):
                    return np.array(im, dtype=np.uint16)
                return np.array(im)
    except Exception as exc:  # the readers raise many types; one message for the user
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    raise ImageReadError(f"{path}: unsupported file type {suffix or '(none)'}; use TIFF, PNG or JPEG")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image: TIFF with tifffile (any dtype, any shape), PNG otherwise."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, image, compression="zlib")
        else:
            from PIL import Image

            Image.fromarray(image).save(tmp, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG"))


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Instance labels as a compressed TIFF, in the smallest unsigned type that holds them."""
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint16 if top < 2**16 else np.uint32
    write_image(path, labels.astype(dtype, copy=False))


def write_csv(path: str | os.PathLike, columns: Mapping[str, Sequence]) -> None:
    names = list(columns)
    n_rows = len(next(iter(columns.values()))) if columns else 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n_rows):
            writer.writerow([_plain(columns[name][i]) for name in names])


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
