"""Choose a model's mask erosion and score threshold on training images (never on the validation split).

    python scripts/calibrate_nuclei_model.py --model src/napari_cellseg/models/nuclei_yolo11n_seg.pt

Segments every other training image of DSB2018 (40 images) once, at a low score threshold and
without erosion, then scores the labels for each pair of (score threshold, erosion): objects below
the threshold are dropped (a run at that threshold keeps the same objects: NMS and stitching rank
by score) and 0, 1 or 2 boundary pixels are peeled off every object. ``--mask-thresholds 0.5,0.6,0.7``
repeats this for each mask probability threshold, and ``--diameters 30,34,38`` for each reference
object diameter (network pixels) with ``segment(diameter="auto")``. Prints the mean DSB score and F1
at IoU 0.5 of each combination and the best: the highest DSB score, where several lie within
``TIE`` of it the one with the highest F1. Package the model with them (``train_nuclei_model.py
--package-only WEIGHTS --mask-erosion K --conf T --mask-threshold M [--object-diameter D]``).

With ``--tta`` the images are segmented with test-time augmentation: the threshold it picks (at the
model's own erosion) is the one for TTA runs (``--package-only ... --conf-tta T`` where it differs).
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

from train_nuclei_model import is_validation, light_background, model_input  # noqa: E402

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.metrics import evaluate  # noqa: E402

THRESHOLDS = (0.15, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
EROSIONS = (0, 1, 2)
TIE = 0.002  # DSB scores this close are a tie on 40 images; F1 at IoU 0.5 decides


def best_row(rows: list[dict]) -> dict:
    top = max(row["dsb_score"] for row in rows)
    return max((row for row in rows if row["dsb_score"] >= top - TIE), key=lambda row: row["f1_50"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--tta", action="store_true", help="calibrate for test-time augmented runs")
    parser.add_argument("--bright-field-only", action="store_true",
                        help="only training images with a light background (histology, bright-field): for the "
                             "bright-field specialist; --images then counts among those")
    parser.add_argument("--mask-thresholds", default="0.5",
                        help="comma-separated mask probability thresholds to try (each one segments every image again)")
    parser.add_argument("--diameters", default=None,
                        help="comma-separated reference object diameters (network pixels) to try with "
                             "diameter='auto' (each one segments every image again)")
    args = parser.parse_args(argv)
    mask_thresholds = [float(m) for m in args.mask_thresholds.split(",")]
    diameters = [float(d) for d in args.diameters.split(",")] if args.diameters else [None]
    from skimage.segmentation import find_boundaries

    ids = [r["id"] for r in csv.DictReader(open(args.data / "metadata.csv")) if not is_validation(r["id"])]
    if args.bright_field_only:
        ids = [i for i in ids if light_background(model_input(read_image(args.data / "images" / f"{i}.png")))]
    ids = sorted(ids)[: 2 * args.images: 2]
    model = load_model(args.model, device="cpu")
    scores = {(m, d, t, k): [] for m in mask_thresholds for d in diameters for t in THRESHOLDS for k in EROSIONS}
    for image_id in ids:
        image = read_image(args.data / "images" / f"{image_id}.png")
        truth = read_image(args.data / "labels" / f"{image_id}.png")
        for m in mask_thresholds:
            for d in diameters:
                model.info.object_diameter = d
                result = segment(image, model, refine=None, bright_field=None, conf=min(THRESHOLDS), mask_erosion=0,
                                 mask_threshold=m, tta=args.tta,
                                 diameter=None if d is None else "auto")
                for t in THRESHOLDS:
                    kept = result.labels_scoring_at_least(t)
                    for k in EROSIONS:
                        eroded = kept.copy()
                        for _ in range(k):
                            eroded[find_boundaries(eroded, mode="inner")] = 0
                        row = evaluate(eroded, truth, with_coco=False)
                        scores[m, d, t, k].append((row["dsb_score"], row["f1_50"]))
    table = [{"mask_threshold": m, "object_diameter": d, "conf": t, "mask_erosion": k,
              "dsb_score": round(float(np.mean([s[0] for s in v])), 4),
              "f1_50": round(float(np.mean([s[1] for s in v])), 4)} for (m, d, t, k), v in scores.items()]
    best = best_row(table)
    # a TTA threshold goes with the erosion the model already runs at
    best_at_model_erosion = best_row([row for row in table if row["mask_erosion"] == model.info.mask_erosion])
    print(json.dumps({"training_images": len(ids), "tta": args.tta, "table": table, "best": best,
                      "best_at_model_erosion": best_at_model_erosion}, indent=2))


if __name__ == "__main__":
    main()
