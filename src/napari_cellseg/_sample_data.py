"""npe2 sample data: DSB2018 nuclei (CC0) with ground-truth labels."""
from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLES = {
    "dense": "dsb2018_fluorescence_dense",
    "small": "dsb2018_fluorescence_small",
    "large": "dsb2018_fluorescence_large",
}


def load_sample(key: str):
    """(image, ground-truth labels) of one sample, as arrays."""
    from .core.io import read_image

    stem = SAMPLES[key]
    return read_image(SAMPLE_DIR / f"{stem}.png"), read_image(SAMPLE_DIR / f"{stem}_labels.png")


def _layers(key: str):
    image, labels = load_sample(key)
    stem = SAMPLES[key]
    return [
        (image, {"name": stem}, "image"),
        # hidden at first: the image is what a user looks at; the truth is there for Evaluate
        (labels, {"name": f"{stem} ground truth", "visible": False, "opacity": 0.5,
                  "metadata": {"napari_cellseg_ground_truth": True}}, "labels"),
    ]


def dense_nuclei():
    return _layers("dense")


def small_nuclei():
    return _layers("small")


def large_nuclei():
    return _layers("large")
