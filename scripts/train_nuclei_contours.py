"""Train the contour U-Net of the shipped nuclei model on DSB2018's ground truth, choose its
refinement settings on held-out training images, and package it, on the CPU.

    python scripts/train_nuclei_contours.py --data ../shared/data/dsb2018 --workdir /tmp/contours \
        --out src/napari_cellseg/models/nuclei_unet_contours.pt

The `nuclei` model (YOLO11n-seg) finds the nuclei; this U-Net, of the student's architecture,
redraws their outlines from its full-resolution foreground (core.refine; README, "Contour
refinement"). Unlike the distilled student it learns the annotators' outlines, so it starts from the
student's weights (the shipped checkpoint: from the student release `f64ea995…af40`, ``--init``) and trains on the ground truth of the fixed training split
(train_nuclei_model.is_validation), leaving out the calibration images: every other one of the first
160 training images (80, the images the nuclei model's object size was chosen on). Model selection
uses the validation split's crops (foreground Dice), as for every student.

Calibration, on those 80 held-out training images: the detector segments each once with its own
settings and no refinement, the U-Net's foreground is computed once (tiled as in the pipeline), and
each setting of (foreground threshold, reach, shrink) redraws the outlines. Rule: the best mean DSB
score among the settings that lower the mean F1@0.5 by at most 0.001 against no refinement. The
chosen settings are written into the float16 checkpoint (``--out``), which the pipeline then uses.
``--package-only CKPT`` skips training and calibrates/packages an existing checkpoint.
"""
from __future__ import annotations

import argparse
import csv
import itertools
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
from napari_cellseg.core.normalize import channel_ranges, to_stack_of_frames  # noqa: E402
from napari_cellseg.pipeline.segment import plan_tiling, run  # noqa: E402
from napari_cellseg.core.refine import ContourRefinement, foreground_iter, refine_labels  # noqa: E402

FG_THRESHOLDS = (0.5, 0.6, 0.7)
REACHES = (1, 2)
SHRINKS = (1, 2, 3)
F1_TOLERANCE = 0.001


def calibration_ids(data: Path, n: int = 80) -> list[str]:
    """Every other one of the first 2n training images (sorted ids)."""
    ids = sorted(p.stem for p in (data / "images").glob("*.png") if not is_validation(p.stem))
    return ids[: 2 * n: 2]


def train(args, held_out: set[str]) -> Path:
    from napari_cellseg.unet_student.data import load_sample
    from napari_cellseg.unet_student.train import train_iter

    def pairs(validation: bool):
        return [(p, args.data / "labels" / p.name) for p in sorted((args.data / "images").glob("*.png"))
                if is_validation(p.stem) == validation and p.stem not in held_out]

    train_samples = [load_sample(*pair) for pair in pairs(False)]
    val_samples = [load_sample(*pair) for pair in pairs(True)]
    print(f"{len(train_samples)} training images ({len(held_out)} held out for calibration), "
          f"{len(val_samples)} validation images", flush=True)
    out = args.workdir / "contours.pt"
    gen = train_iter(train_samples, val_samples, out, epochs=args.epochs, batch=8, crop=args.crop, lr=args.lr,
                     init=args.init, resume=args.resume,
                     info={"source": "trained on masks", "role": "contour refiner of nuclei",
                           "data": "DSB2018 stage1_train (corrected) ground truth, train split of "
                                   "train_nuclei_model.is_validation minus the 80 calibration images"})
    result = run(gen, lambda p: p.get("record") is not None and print(p.message, flush=True))
    print(f"best validation Dice {result.best_dice:.4f}: {result.path}", flush=True)
    return Path(result.path)


def frame_foreground(image: np.ndarray, refiner) -> np.ndarray:
    """The refiner's foreground over a 2-D image, tiled exactly as the pipeline does it."""
    frames, layout = to_stack_of_frames(image)
    frame = frames[(0,) * len(layout.stack_shape)]
    plan = plan_tiling(refiner)
    return run(foreground_iter(frame, channel_ranges(frame), refiner, plan.tile, plan.overlap)).astype(np.float32)


def calibrate(data: Path, checkpoint: Path, detector: str, ids: list[str]) -> tuple[dict, list[dict]]:
    model = load_model(detector, device="cpu")
    refiner = load_model(str(checkpoint), device="cpu")
    grid = [ContourRefinement(t, r, 0.8, s) for t, r, s in itertools.product(FG_THRESHOLDS, REACHES, SHRINKS)]
    scores = {"none": []} | {json.dumps(g.as_dict()): [] for g in grid}
    for n, image_id in enumerate(ids, 1):
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        own = segment(image, model, refine=None, bright_field=None).labels
        foreground = frame_foreground(image, refiner)
        scores["none"].append(evaluate(own, truth, with_coco=False))
        for g in grid:
            scores[json.dumps(g.as_dict())].append(evaluate(refine_labels(own, foreground, g)[0], truth,
                                                            with_coco=False))
        if n % 10 == 0:
            print(f"calibration: {n}/{len(ids)} images", flush=True)
    table = [{"settings": None if key == "none" else json.loads(key),
              "dsb_score": round(float(np.mean([r["dsb_score"] for r in rows])), 4),
              "f1_50": round(float(np.mean([r["f1_50"] for r in rows])), 4)} for key, rows in scores.items()]
    floor = table[0]["f1_50"] - F1_TOLERANCE
    best = max((row for row in table[1:] if row["f1_50"] >= floor), key=lambda row: row["dsb_score"])
    return best, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nuclei-contours"))
    parser.add_argument("--out", type=Path, default=None, help="write the calibrated float16 checkpoint here")
    parser.add_argument("--detector", default="nuclei")
    parser.add_argument("--init", default="nuclei-student", help="starting weights (a student checkpoint or name)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--package-only", type=Path, default=None, help="calibrate and package this checkpoint")
    args = parser.parse_args(argv)
    from napari_cellseg.backends import resolve_model
    from napari_cellseg.unet_student.model import compact_checkpoint

    started = time.time()
    ids = calibration_ids(args.data)
    if args.init and not Path(args.init).is_file():
        args.init = str(resolve_model(args.init)[1])
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.package_only or train(args, set(ids))
    best, table = calibrate(args.data, checkpoint, args.detector, ids)
    print(f"{len(ids)} calibration images: DSB score / F1@0.5", flush=True)
    for row in table:
        setting = row["settings"]
        name = ("fg threshold {fg_threshold}, reach {reach}, shrink {shrink}".format(**setting) if setting
                else "no refinement")
        print(f"  {name}: {row['dsb_score']:.4f} / {row['f1_50']:.4f}", flush=True)
    print("chosen:", json.dumps(best), flush=True)
    if args.out:
        compact_checkpoint(checkpoint, args.out, half=True, refinement=best["settings"],
                           calibration={"images": len(ids), "split": "training (held out from this U-Net's training)",
                                        "rule": f"best mean DSB score with F1@0.5 at most {F1_TOLERANCE} below "
                                                "no refinement", "detector": args.detector,
                                        "dsb_score": best["dsb_score"], "f1_50": best["f1_50"],
                                        "unrefined": table[0]})
        print(f"written {args.out}", flush=True)
    print(f"done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
