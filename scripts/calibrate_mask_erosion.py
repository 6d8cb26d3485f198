"""Choose a model's mask erosion on training images (never on the validation split).

    python scripts/calibrate_mask_erosion.py --model src/napari_cellseg/models/nuclei_yolo11n_seg.pt

Segments every other training image of DSB2018 (40 images) once, then scores the labels after
peeling 0, 1 and 2 boundary pixels off every object; prints the mean DSB score and F1 at IoU 0.5
for each, and the best erosion.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_nuclei_model import is_validation  # noqa: E402

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.metrics import evaluate  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args(argv)
    from skimage.segmentation import find_boundaries

    ids = [r["id"] for r in csv.DictReader(open(args.data / "metadata.csv")) if not is_validation(r["id"])]
    ids = sorted(ids)[: 2 * args.images: 2]
    model = load_model(args.model, device="cpu")
    scores = {k: [] for k in (0, 1, 2)}
    for image_id in ids:
        image = read_image(args.data / "images" / f"{image_id}.png")
        truth = read_image(args.data / "labels" / f"{image_id}.png")
        labels = segment(image, model, mask_erosion=0).labels
        for k in scores:
            eroded = labels.copy()
            for _ in range(k):
                eroded[find_boundaries(eroded, mode="inner")] = 0
            row = evaluate(eroded, truth, with_coco=False)
            scores[k].append((row["dsb_score"], row["f1_50"]))
    table = {k: {"dsb_score": float(np.mean([s[0] for s in v])), "f1_50": float(np.mean([s[1] for s in v]))}
             for k, v in scores.items()}
    best = max(table, key=lambda k: table[k]["dsb_score"])
    print(json.dumps({"training_images": len(ids), "by_erosion": table, "best_erosion": best}, indent=2))


if __name__ == "__main__":
    main()
