"""Image normalisation and channel handling shared by every backend.

Microscopy images come as uint8, uint16, float, with or without channels. Models
are trained on 8-bit-like input, so every image is mapped through per-channel
percentiles (not a naive cast, which crushes 12/16-bit data to black).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (1.0, 99.8)
# Percentiles of very large frames are estimated on a strided subsample.
_MAX_PIXELS_FOR_PERCENTILE = 4_000_000


class ImageInputError(ValueError):
    """The image cannot be segmented as given (shape, values or channels)."""


@dataclass(frozen=True)
class ImageLayout:
    """How an array maps to (stack..., Y, X[, C])."""

    stack_shape: tuple[int, ...]
    height: int
    width: int
    channels: int  # channels after selection: 1 (grey) or 3 (RGB)


def percentile_range(channel: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> tuple[float, float]:
    """Low/high intensity of one 2-D channel, ignoring NaN and inf."""
    step = max(1, int(np.ceil(np.sqrt(channel.size / _MAX_PIXELS_FOR_PERCENTILE))))
    sample = np.asarray(channel[::step, ::step])
    if sample.dtype in (np.uint8, np.uint16) and sample.size:
        finite = sample  # integers: every value counts
        lo, hi = _histogram_percentiles(sample, percentiles)
    else:
        sample = sample.astype(np.float32, copy=False)
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            raise ImageInputError("the image contains no finite values (all NaN or inf)")
        lo, hi = np.percentile(finite, percentiles)
    if hi <= lo:  # flat image or extreme sparsity: fall back to the full range
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi)


def _histogram_percentiles(values: np.ndarray, percentiles) -> tuple[float, float]:
    """``np.percentile(values, percentiles)`` (its default linear rule) of 8- or 16-bit integers, read from
    their histogram: one counting pass instead of a partial sort per channel, and the same numbers."""
    counts = np.bincount(values.ravel(), minlength=2)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    out = []
    for q in percentiles:
        position = q / 100 * (n - 1)
        below = int(np.floor(position))
        # the k-th smallest value (0-based) is the first value whose cumulative count exceeds k
        v0, v1 = np.searchsorted(cumulative, [below, min(below + 1, n - 1)], side="right")
        out.append(float(v0 + (position - below) * (int(v1) - int(v0))))
    return out[0], out[1]


def channel_ranges(frame, percentiles=DEFAULT_PERCENTILES) -> list[tuple[float, float]]:
    """Per-channel (low, high) of a (Y, X, C) frame; works on lazy (dask/zarr) arrays too."""
    return [percentile_range(frame[..., c], percentiles) for c in range(frame.shape[-1])]


def raw_uint8_ranges(frame) -> tuple[list[tuple[float, float]], str | None]:
    """Per-channel ranges that hand a (Y, X, C) frame to a model that wants raw uint8
    (``ModelInfo.wants_raw_uint8``), and a note when the frame could not be passed as given.

    - uint8: (0, 255) on every channel, so ``apply_ranges`` returns the pixels unchanged;
    - other integer types whose values all lie in 0..255 (an 8-bit image read as a wider type): the same;
    - floats whose finite values all lie in [0, 1] (skimage's float convention): (0, 1), i.e. x 255,
      truncated to an integer;
    - anything else (12/16-bit data, other floats): the per-channel percentile stretch every other model
      gets, with a note saying so (the model then sees other pixels than a uint8 export of the image).
    The whole frame is read once for its minimum and maximum.
    """
    n = frame.shape[-1]
    dtype = np.dtype(frame.dtype)
    if dtype == np.uint8:
        return [(0.0, 255.0)] * n, None
    values = np.asarray(frame)  # every pixel: one value out of range decides
    finite = values[np.isfinite(values)] if dtype.kind == "f" else values
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return [(0.0, 255.0)] * n, None
    if dtype.kind == "f" and lo >= 0 and hi <= 1:
        return [(0.0, 1.0)] * n, None
    return channel_ranges(frame), (f"{dtype} frame with values {lo:g}..{hi:g}: stretched to uint8 by the "
                                   f"{DEFAULT_PERCENTILES[0]:g}-{DEFAULT_PERCENTILES[1]:g} percentiles; the model "
                                   "expects 8-bit images as it was trained on")


def apply_ranges(block: np.ndarray, ranges: list[tuple[float, float]]) -> np.ndarray:
    """Map a (y, x, C) block to uint8 with given per-channel ranges (NaN/-inf -> 0, +inf -> 255).

    Tiles of one frame share the frame's ranges, so tile seams do not show.
    """
    block = np.asarray(block)
    out = np.empty(block.shape, dtype=np.uint8)
    for c, (lo, hi) in enumerate(ranges):
        if hi <= lo:
            out[..., c] = 0
            continue
        scaled = (block[..., c].astype(np.float32) - lo) * (255.0 / (hi - lo))
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
        out[..., c] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def normalize_to_uint8(frame: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> np.ndarray:
    """Map a (Y, X) or (Y, X, C) frame to uint8 by per-channel percentiles.

    NaN/inf are ignored for the percentiles. A constant channel maps to 0.
    """
    frame = np.asarray(frame)
    squeeze = frame.ndim == 2
    if squeeze:
        frame = frame[..., None]
    out = apply_ranges(frame, channel_ranges(frame, percentiles))
    return out[..., 0] if squeeze else out


# Median normalised grey level above which a frame counts as bright-field (dark objects on a light
# background). On DSB2018 fluorescence frames it is 0-48, on histology and bright-field 133-241.
BRIGHT_BACKGROUND_LEVEL = 96


def bright_background(frame, ranges: list[tuple[float, float]] | None = None) -> bool:
    """True when a (Y, X, C) frame, normalised with ``ranges`` (default: its own percentiles), shows a light
    background: bright-field and stained histology rather than fluorescence. Large frames are judged on a
    strided subsample."""
    ranges = ranges if ranges is not None else channel_ranges(frame)
    step = max(1, int(np.ceil(np.sqrt(frame.shape[0] * frame.shape[1] / _MAX_PIXELS_FOR_PERCENTILE))))
    sample = apply_ranges(np.asarray(frame[::step, ::step]), ranges)
    return float(np.median(sample.mean(axis=-1))) > BRIGHT_BACKGROUND_LEVEL


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """(Y, X, 1) grey -> (Y, X, 3), the form every backend takes; (Y, X, 3) unchanged."""
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame


def model_rgb(frame: np.ndarray) -> np.ndarray:
    """A (Y, X, C) frame as the models see it: percentile-normalised to uint8, three channels."""
    return as_rgb(normalize_to_uint8(frame))


def to_stack_of_frames(
    image: np.ndarray,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
) -> tuple[np.ndarray, ImageLayout]:
    """Bring an image to shape (stack..., Y, X, C) with C in {1, 3}.

    - ``rgb``: the last axis holds RGB(A) colour. ``None`` guesses as napari does
      (last axis of length 3 or 4 on an array of 3+ dimensions).
    - ``channel_axis``/``channel``: a multi-channel (fluorescence) image; the
      chosen channel is segmented as a grey image. Without ``channel`` a
      multi-channel image is rejected, because guessing a channel silently
      segments the wrong thing.
    Arrays are not copied where a view suffices (dask/zarr stay lazy per frame).
    """
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.number)):
        raise ImageInputError(f"unsupported pixel type {image.dtype}; expected integers or floats")
    if np.issubdtype(image.dtype, np.complexfloating):
        raise ImageInputError("complex-valued images are not supported")
    if image.ndim < 2:
        raise ImageInputError(f"expected a 2-D image or a stack, got an array of shape {image.shape}")

    if channel_axis is not None:
        axis = channel_axis % image.ndim
        n_channels = image.shape[axis]
        if channel is None:
            if n_channels != 1:
                raise ImageInputError(
                    f"the image has {n_channels} channels on axis {axis}; choose one with channel=0..{n_channels - 1}"
                )
            channel = 0
        if not 0 <= channel < n_channels:
            raise ImageInputError(f"channel {channel} does not exist; the image has {n_channels} channels")
        image = image[(slice(None),) * axis + (channel,)]  # plain indexing keeps dask arrays lazy
        rgb = False

    if rgb is None:
        rgb = image.ndim >= 3 and image.shape[-1] in (3, 4)
    if rgb:
        if image.shape[-1] not in (3, 4):
            raise ImageInputError(f"an RGB image needs 3 or 4 values on its last axis, got shape {image.shape}")
        image = image[..., :3]  # alpha carries no signal
        spatial = image.shape[:-1]
    else:
        spatial = image.shape
        image = image[..., None]
    if len(spatial) < 2:
        raise ImageInputError(f"expected a 2-D image or a stack, got an array of shape {image.shape}")
    if len(spatial) > 4:
        raise ImageInputError(
            f"the image has {len(spatial)} spatial/stack dimensions (shape {spatial}); at most two stack axes "
            "(e.g. time and z) before Y and X are supported — pick a channel with channel_axis/channel"
        )
    height, width = spatial[-2:]
    if height < 2 or width < 2:
        raise ImageInputError(f"the image is too small to segment ({height}x{width} pixels)")
    layout = ImageLayout(stack_shape=tuple(spatial[:-2]), height=height, width=width, channels=image.shape[-1])
    return image, layout
