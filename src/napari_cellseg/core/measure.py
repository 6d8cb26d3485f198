"""Per-object measurements (scikit-image regionprops), in physical units when a pixel size is given."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHAPE_PROPERTIES = ("label", "centroid", "area", "perimeter", "eccentricity", "solidity", "orientation",
                    "major_axis_length", "minor_axis_length")


def measure(
    labels: np.ndarray,
    intensity: np.ndarray | None = None,
    *,
    pixel_size: Sequence[float] | float | None = None,
    unit: str = "px",
    channel_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """One row per object of a 2-D label image or each frame of a stack.

    ``intensity``: an image of the labels' shape, or with a trailing channel axis;
    mean, min, max, std and integrated intensity are measured per channel.
    ``pixel_size`` (y, x) turns lengths and areas into ``unit`` and ``unit``².
    ``orientation_deg`` is regionprops' orientation (angle between the row axis and
    the major axis) in degrees.
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape[: labels.ndim] != labels.shape:
            raise ValueError(f"labels of shape {labels.shape} do not match the image of shape {intensity.shape}")
        if intensity.ndim == labels.ndim:
            intensity = intensity[..., None]
    if pixel_size is None:
        sy = sx = 1.0
    elif np.ndim(pixel_size) == 0:
        sy = sx = float(pixel_size)
    else:
        sy, sx = (float(v) for v in list(pixel_size)[-2:])
    if not np.isclose(sy, sx):
        raise ValueError(f"anisotropic pixels ({sy} x {sx}) are not supported for shape measurements")
    n_channels = 0 if intensity is None else intensity.shape[-1]
    names = list(channel_names or [f"ch{c}" for c in range(n_channels)])

    frames = labels.reshape((-1,) + labels.shape[-2:])
    images = None if intensity is None else intensity.reshape((-1,) + intensity.shape[-3:])
    columns: dict[str, list] = {}
    for f, frame in enumerate(frames):
        props = regionprops_table(frame, properties=SHAPE_PROPERTIES)
        n = len(props["label"])
        rows = {
            "label": props["label"].astype(np.int64),
            "frame": np.full(n, f, np.int64),
            "centroid_y": props["centroid-0"] * sy,
            "centroid_x": props["centroid-1"] * sx,
            f"area_{unit}2": props["area"] * sy * sx,
            f"perimeter_{unit}": props["perimeter"] * sx,
            f"major_axis_{unit}": props["major_axis_length"] * sx,
            f"minor_axis_{unit}": props["minor_axis_length"] * sx,
            "eccentricity": props["eccentricity"],
            "solidity": props["solidity"],
            "orientation_deg": np.degrees(props["orientation"]),
        }
        if images is not None:
            image = images[f]
            index = props["label"]
            from scipy import ndimage as ndi

            for c, name in enumerate(names):
                channel = image[..., c].astype(np.float64)
                rows[f"mean_{name}"] = np.asarray(ndi.mean(channel, frame, index))
                rows[f"min_{name}"] = np.asarray(ndi.minimum(channel, frame, index))
                rows[f"max_{name}"] = np.asarray(ndi.maximum(channel, frame, index))
                rows[f"std_{name}"] = np.asarray(ndi.standard_deviation(channel, frame, index))
                rows[f"integrated_{name}"] = np.asarray(ndi.sum(channel, frame, index))
        for key, values in rows.items():
            columns.setdefault(key, []).append(np.asarray(values))
    return {key: np.concatenate(parts) for key, parts in columns.items()}
