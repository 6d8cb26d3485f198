"""Corrections of instance labels, as pixel edits.

Every operation returns an :class:`Edit` (which pixels get which value) instead
of a new array, so the viewer can apply it through napari's undoable
``Labels.data_setitem`` and nothing else is touched.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Edit:
    indices: tuple[np.ndarray, ...]  # one index array per axis
    values: np.ndarray
    message: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Apply to a copy (for headless use and tests)."""
        out = np.array(labels, copy=True)
        out[self.indices] = self.values
        return out


def _edit(mask: np.ndarray, value, message: str) -> Edit:
    indices = np.nonzero(mask)
    values = np.broadcast_to(np.asarray(value), indices[0].shape).astype(np.int64) if np.ndim(value) == 0 \
        else np.asarray(value)[mask]
    return Edit(indices, np.asarray(values), message)


def next_free_label(labels: np.ndarray) -> int:
    return int(np.max(labels)) + 1 if np.size(labels) else 1


def merge(labels: np.ndarray, ids: Sequence[int]) -> Edit:
    """All of ``ids`` become the smallest of them."""
    ids = sorted({int(i) for i in ids if i})
    if len(ids) < 2:
        raise ValueError("select at least two labels to merge")
    return _edit(np.isin(labels, ids[1:]), ids[0], f"merged {ids} into {ids[0]}")


def delete(labels: np.ndarray, ids: Sequence[int]) -> Edit:
    ids = [int(i) for i in ids if i]
    if not ids:
        raise ValueError("select a label to delete")
    return _edit(np.isin(labels, ids), 0, f"deleted {ids}")


def fill_holes(labels: np.ndarray, ids: Sequence[int] | None = None) -> Edit:
    """Background enclosed by an object becomes part of it."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    filled = np.array(labels, copy=True)
    wanted = None if ids is None else {int(i) for i in ids}
    for region in regionprops(np.asarray(labels)):
        if wanted is not None and region.label not in wanted:
            continue
        window = tuple(slice(a, b) for a, b in zip(region.bbox[: labels.ndim], region.bbox[labels.ndim:]))
        holes = ndi.binary_fill_holes(region.image) & ~region.image
        sub = filled[window]
        sub[holes & (sub == 0)] = region.label
    changed = filled != labels
    return _edit(changed, filled, f"filled {int(changed.sum())} hole pixels")


def remove_small(labels: np.ndarray, min_area: int) -> Edit:
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    small = ids[areas < min_area]
    return _edit(np.isin(labels, small), 0, f"removed {len(small)} objects under {min_area} px")


def relabel_sequential(labels: np.ndarray) -> Edit:
    from skimage.segmentation import relabel_sequential as relabel

    new, _, _ = relabel(np.asarray(labels))
    changed = new != labels
    return _edit(changed, new, f"relabelled {len(np.unique(labels[labels > 0]))} objects as 1..N")


def split_by_line(labels: np.ndarray, label: int, line: np.ndarray, width: int = 1) -> Edit:
    """Cut object ``label`` along a polyline ((N, 2) y, x points); the largest piece keeps the id."""
    from scipy import ndimage as ndi
    from skimage.draw import line as draw_line

    mask = labels == label
    if not mask.any():
        raise ValueError(f"label {label} is not in the image")
    cut = np.zeros_like(mask)
    points = np.round(np.asarray(line, float)).astype(int)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        rr, cc = draw_line(y0, x0, y1, x1)
        keep = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
        cut[rr[keep], cc[keep]] = True
    if width > 1:
        cut = ndi.binary_dilation(cut, iterations=width - 1)
    pieces, n = ndi.label(mask & ~cut)
    if n < 2:
        raise ValueError("the line does not cut the object in two")
    return _relabel_pieces(labels, mask, pieces, n, label, "cut along the line")


def split_watershed(labels: np.ndarray, label: int, seeds: np.ndarray | None = None) -> Edit:
    """Split object ``label`` by a seeded watershed on its distance transform.

    ``seeds``: (K, 2) points inside the object; without them the two strongest
    distance maxima are used.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = labels == label
    if not mask.any():
        raise ValueError(f"label {label} is not in the image")
    distance = ndi.distance_transform_edt(mask)
    if seeds is None:
        seeds = peak_local_max(distance, labels=mask.astype(int), num_peaks=2, min_distance=2,
                               exclude_border=False)
    seeds = np.round(np.asarray(seeds, float)).astype(int)
    seeds = np.array([s for s in seeds if mask[tuple(s)]])
    if len(seeds) < 2:
        raise ValueError("need two seeds inside the object to split it")
    markers = np.zeros(labels.shape, np.int32)
    markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
    pieces = watershed(-distance, markers, mask=mask)
    return _relabel_pieces(labels, mask, pieces, len(seeds), label, "split by watershed")


def _relabel_pieces(labels, mask, pieces, n, label, how) -> Edit:
    from scipy import ndimage as ndi

    sizes = np.bincount(pieces[mask], minlength=n + 1)
    order = np.argsort(-sizes[1:]) + 1  # piece ids by size, largest first
    new_labels = np.zeros(n + 1, np.int64)
    new_labels[order[0]] = label
    free = next_free_label(labels)
    for k, piece in enumerate(order[1:]):
        new_labels[piece] = free + k
    result = np.where(mask, new_labels[pieces], labels)
    leftover = mask & (pieces == 0)  # cut-line pixels join their nearest piece
    if leftover.any():
        _, nearest = ndi.distance_transform_edt(leftover, return_indices=True)
        result[leftover] = result[tuple(i[leftover] for i in nearest)]
    created = list(range(free, free + n - 1))
    return _edit(result != labels, result, f"{how}: {label} -> {[label] + created}")
