"""Images the tests generate: bright discs (nuclei) on a dark, noisy background."""
from __future__ import annotations

import numpy as np


def disc_image(
    shape=(256, 256), n=12, radius=(6, 12), seed=0, dtype=np.uint16, gap=3, centres=None
) -> tuple[np.ndarray, np.ndarray]:
    """(image, ground-truth labels) with non-touching discs; 16-bit values by default."""
    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:h, :w]
    placed = []
    attempts = 0
    wanted = list(centres) if centres is not None else None
    while len(placed) < (len(wanted) if wanted is not None else n) and attempts < 5000:
        attempts += 1
        r = rng.uniform(*radius)
        if wanted is not None:
            cy, cx = wanted[len(placed)]
        else:
            cy, cx = rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1)
        if any((cy - py) ** 2 + (cx - px) ** 2 < (r + pr + gap) ** 2 for py, px, pr in placed):
            if wanted is None:
                continue
        placed.append((cy, cx, r))
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = len(placed)
    scale = 3000.0 if dtype == np.uint16 else (200.0 if dtype == np.uint8 else 1.0)
    image = (labels > 0) * scale + rng.normal(0.08 * scale, 0.02 * scale, shape)
    image = np.clip(image, 0, None)
    return image.astype(dtype), labels
