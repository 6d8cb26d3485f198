"""Contour refinement: a detector's instances, their outlines redrawn from a U-Net's foreground.

YOLO's masks are built from prototypes at a quarter of the network's resolution, so their outlines
are coarse; the U-Net student predicts foreground at full resolution. Refinement keeps every
instance the detector found (same ids, scores and classes) and lets a seeded watershed redraw its
outline:

    markers = each instance eroded by ``shrink`` pixels (a square of 2 * shrink + 1): it can shrink by
              that much, never vanish;
    region  = the U-Net's foreground probability > ``fg_threshold``, within ``reach`` pixels of the instance;
    labels  = watershed of -foreground from the markers, restricted to region | markers.

A frame is refined only where the two models agree: when the Dice of the U-Net's foreground
with the detector's masks is below ``min_agreement`` (images unlike those the U-Net learned,
e.g. histology), the detector's masks are kept unchanged. A refiner checkpoint may carry its own
settings (``UNetBackend.refinement``, chosen on training images; README, "Contour refinement");
the defaults below are those chosen for the distilled student.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Generator

import numpy as np


@dataclass(frozen=True)
class ContourRefinement:
    fg_threshold: float = 0.6
    reach: int = 1
    min_agreement: float = 0.8
    shrink: int = 1

    def __post_init__(self):
        if not 0 < self.fg_threshold < 1:
            raise ValueError(f"fg_threshold must lie strictly between 0 and 1 (got {self.fg_threshold})")
        if self.reach < 0:
            raise ValueError(f"reach must be 0 or more pixels (got {self.reach})")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement must lie in [0, 1] (got {self.min_agreement})")
        if self.shrink < 1:
            raise ValueError(f"shrink must be 1 or more pixels (got {self.shrink}): markers must lie inside objects")

    def as_dict(self) -> dict:
        return asdict(self)


def foreground_agreement(labels: np.ndarray, foreground: np.ndarray, fg_threshold: float) -> float:
    """Dice of (foreground > threshold) with the instances' union; 1.0 when both are empty."""
    both = total = 0
    for rows in _row_chunks(labels.shape[0]):  # no full-frame temporaries on large frames
        ours, theirs = foreground[rows] > fg_threshold, labels[rows] > 0
        both += int(np.count_nonzero(ours & theirs))
        total += int(np.count_nonzero(ours)) + int(np.count_nonzero(theirs))
    return 2.0 * both / total if total else 1.0


def refine_labels(labels: np.ndarray, foreground: np.ndarray, params: ContourRefinement = ContourRefinement(),
                  window: int = 2048, halo: int = 64) -> tuple[np.ndarray, float, bool]:
    """One 2-D frame: (refined labels, agreement, whether it was refined). Ids are kept; the input is
    not modified. Large frames are redrawn in windows of ``window`` pixels, each with ``halo`` pixels of
    context written back inside the window only (an outline moves by at most ``reach`` pixels, so the
    context decides nothing beyond it)."""
    labels = np.asarray(labels)
    if labels.shape != foreground.shape:
        raise ValueError(f"labels {labels.shape} and foreground {foreground.shape} differ in shape")
    agreement = foreground_agreement(labels, foreground, params.fg_threshold)
    if agreement < params.min_agreement or not labels.any():
        return labels, agreement, False
    height, width = labels.shape
    refined = labels.copy()
    for y0 in range(0, height, window):
        for x0 in range(0, width, window):
            y1, x1 = min(y0 + window, height), min(x0 + window, width)
            cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
            cy1, cx1 = min(height, y1 + halo), min(width, x1 + halo)
            crop = slice(cy0, cy1), slice(cx0, cx1)
            redrawn = redraw_outlines(labels[crop], foreground[crop], params)
            refined[y0:y1, x0:x1] = redrawn[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
    return refined, agreement, True


def redraw_outlines(labels: np.ndarray, foreground: np.ndarray, params: ContourRefinement) -> np.ndarray:
    """The seeded watershed of the module's docstring on one window (no agreement check)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    if not labels.any():
        return labels.copy()
    markers = np.where(ndimage.grey_erosion(labels, size=2 * params.shrink + 1) == labels, labels, 0)
    # instances too thin to survive the erosion keep all their pixels as marker
    lost = np.setdiff1d(np.unique(labels), np.unique(markers))
    if len(lost):
        markers = np.where(np.isin(labels, lost), labels, markers)
    near = labels > 0
    if params.reach:
        near = ndimage.binary_dilation(near, structure=np.ones((2 * params.reach + 1,) * 2, bool))
    region = ((foreground > params.fg_threshold) & near) | (markers > 0)
    return watershed(-foreground.astype(np.float32), markers, mask=region).astype(labels.dtype, copy=False)


def foreground_iter(frame, ranges, refiner, tile: int, overlap: int,
                    augmented: bool = False) -> Generator[int, None, np.ndarray]:
    """The refiner's foreground probability over a whole (H, W, C) frame (lazy arrays too: only tiles are
    read), tile by tile at its own zoom, each tile normalised with the frame's ``ranges``. Each pixel comes
    from the tile where it lies farthest from a cut edge (a network sees least context at its tile's
    edges). The refiner is any object with ``probabilities(tile, augmented=False)`` returning (3, H, W)
    maps, as UNetBackend; ``augmented``: each tile's map is the mean over its four flips (test-time
    augmentation).
    Yields the number of tiles done; returns the (H, W) float16 map."""
    import cv2

    from .normalize import apply_ranges, as_rgb
    from .tiling import tile_grid

    height, width = frame.shape[:2]
    zoom = float(refiner.info.zoom)
    tiles = tile_grid(height, width, tile, overlap)
    rows = _owned_spans(height, sorted({(t.y0, t.y1) for t in tiles}))
    cols = _owned_spans(width, sorted({(t.x0, t.x1) for t in tiles}))
    foreground = np.zeros((height, width), np.float16)
    for done, t in enumerate(tiles, 1):
        block = as_rgb(apply_ranges(np.asarray(frame[t.slices]), ranges))
        h, w = block.shape[:2]
        zh, zw = max(1, round(h * zoom)), max(1, round(w * zoom))
        net = block if (zh, zw) == (h, w) else cv2.resize(block, (zw, zh), interpolation=cv2.INTER_LINEAR)
        fg = refiner.probabilities(net, augmented=augmented)[0]
        if fg.shape != (h, w):
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
        (ry0, ry1), (rx0, rx1) = rows[(t.y0, t.y1)], cols[(t.x0, t.x1)]
        foreground[ry0:ry1, rx0:rx1] = fg[ry0 - t.y0:ry1 - t.y0, rx0 - t.x0:rx1 - t.x0]
        yield done
    return foreground


class ForegroundWorker:
    """A ``foreground_iter`` generator run in a worker thread, so the refiner's network works while the detector's does:
    the detector's Python steps between its network calls leave a core idle, and both runtimes (ONNX Runtime,
    torch) release the GIL while they compute. The map is the one ``foreground_iter`` returns.

    ``wait()`` is a generator: it yields the tiles done while the worker runs (progress, and a point where
    the caller can be cancelled) and returns the map, or raises what the worker raised. ``cancel()`` stops
    the worker after its current tile; it returns at once when the worker is done.
    """

    POLL_SECONDS = 0.05

    def __init__(self, tiles: Generator[int, None, np.ndarray]):
        self.done = 0
        self._stop = threading.Event()
        self._result: np.ndarray | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(tiles,), name="napari-cellseg-refiner", daemon=True)
        self._thread.start()

    def _work(self, tiles) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.done = next(tiles)
                except StopIteration as stop:
                    self._result = stop.value
                    return
            tiles.close()
        except BaseException as error:  # handed to the caller by wait()
            self._error = error

    def wait(self) -> Generator[int, None, np.ndarray]:
        reported = -1
        while self._thread.is_alive():
            self._thread.join(self.POLL_SECONDS)
            if self.done != reported:
                reported = self.done
                yield reported
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the refiner's worker was cancelled")
        return self._result

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def _owned_spans(length: int, spans: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, int]]:
    """Along one axis: the positions each tile span owns, those farther from its cut edges than from any
    other span's (image borders are not cuts). Ownership along the two axes is independent: the tile
    whose smaller edge distance is largest is the one that wins on each axis."""
    position = np.arange(length)
    far = length + 1
    margins = np.full((len(spans), length), -1, np.int64)
    for k, (a, b) in enumerate(spans):
        inside = position[a:b]
        before = inside - a if a > 0 else np.full(b - a, far)
        after = b - 1 - inside if b < length else np.full(b - a, far)
        margins[k, a:b] = np.minimum(before, after)
    owner = margins.argmax(axis=0)
    owned = {}
    for k, span in enumerate(spans):
        where = np.flatnonzero(owner == k)
        owned[span] = (int(where[0]), int(where[-1]) + 1) if len(where) else (span[0], span[0])
    return owned


def _row_chunks(height: int, rows: int = 1024):
    return [slice(y, min(y + rows, height)) for y in range(0, height, rows)]
