"""Validation figures of a nuclei model on the fixed DSB2018 validation split.

    python scripts/validate_nuclei_model.py --model nuclei --data ../shared/data/dsb2018 [--conf T]

Runs the plugin's own ``segment`` (full-resolution tiling) on every validation
image (see train_nuclei_model.is_validation), and prints the DSB score over all
modalities, F1 at IoU 0.5 on the fluorescence images, and the same for the
classical Otsu + watershed baseline.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_nuclei_model import is_validation  # noqa: E402

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.metrics import evaluate  # noqa: E402
from napari_cellseg.pipeline.segment import parse_diameter  # noqa: E402


def validate(model, data: Path, conf: float | None, limit: int | None = None, **options) -> dict:
    modality = {r["id"]: r["modality_guess"] for r in csv.DictReader(open(data / "metadata.csv"))}
    ids = sorted(p.stem for p in (data / "images").glob("*.png") if is_validation(p.stem))[:limit]
    rows = []
    for image_id in ids:
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        started = time.perf_counter()
        result = segment(image, model, conf=conf, **options)
        seconds = time.perf_counter() - started
        row = evaluate(result.labels, truth, with_coco=False)
        rows.append({"id": image_id, "modality": modality.get(image_id, "?"), "seconds": seconds, **row})
    fluo = [r for r in rows if r["modality"] == "fluorescence"]
    other = [r for r in rows if r["modality"] != "fluorescence"]
    return {
        "n_images": len(rows),
        "n_fluorescence": len(fluo),
        "dsb_score_all": float(np.mean([r["dsb_score"] for r in rows])),
        "f1_50_all": float(np.mean([r["f1_50"] for r in rows])),
        "dsb_score_fluorescence": float(np.mean([r["dsb_score"] for r in fluo])),
        "f1_50_fluorescence": float(np.mean([r["f1_50"] for r in fluo])),
        "dsb_score_histology_and_bright_field": float(np.mean([r["dsb_score"] for r in other])) if other else None,
        "f1_50_histology_and_bright_field": float(np.mean([r["f1_50"] for r in other])) if other else None,
        "mean_abs_relative_count_error": float(np.nanmean([abs(r["relative_count_error"]) for r in rows])),
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--conf", type=float, default=None, help="score threshold (default: the model's)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--baseline", action="store_true", help="also score Otsu + watershed")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--mask-erosion", type=int, default=None, help="default: the model's")
    parser.add_argument("--mask-threshold", type=float, default=None, help="default: the model's")
    parser.add_argument("--diameter", type=parse_diameter, default="auto",
                        help="object diameter in pixels, 'auto' (default) or 'off' (the training scale)")
    parser.add_argument("--no-refine", action="store_true", help="keep the detector's outlines (no contour refinement)")
    parser.add_argument("--refine", default="auto", help="the contour U-Net (name or checkpoint; default: the model's own)")
    parser.add_argument("--no-bright-field", action="store_true",
                        help="segment histology and bright-field images with the model itself, not its specialist")
    args = parser.parse_args(argv)
    options = {"tile": args.tile, "imgsz": args.imgsz, "tta": args.tta, "mask_erosion": args.mask_erosion,
               "mask_threshold": args.mask_threshold, "diameter": args.diameter,
               "refine": None if args.no_refine else args.refine, "bright_field": None if args.no_bright_field else "auto"}
    model = load_model(args.model, device="cpu")
    conf = model.info.default_conf(args.tta) if args.conf is None else args.conf
    figures = {"settings": {**options, "conf": conf},
               "model": validate(model, args.data, args.conf, args.limit, **options)}
    if args.baseline:
        figures["otsu-watershed"] = validate(load_model("otsu-watershed"), args.data, args.conf, args.limit)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
