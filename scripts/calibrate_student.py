"""Choose a distilled student's foreground threshold on training images (never on the validation split).

    python scripts/calibrate_student.py --student /tmp/student/student.pt --teacher nuclei \
        --out src/napari_cellseg/models/nuclei_unet_student.pt

The student is meant to agree with its teacher. On every other training image of DSB2018 (40 by
default) the teacher segments once with its own settings (as it runs by default, its outlines
redrawn by its contour U-Net where it has one; ``--teacher-refine none``: its own outlines), and the student's probability maps are
computed once (cached per tile); then, for each foreground threshold, the student's instances are
made by its seeded watershed and compared with the teacher's masks (foreground Dice, mean over
images; F1 at IoU 0.5 against the ground truth is printed alongside, as a check). The threshold
with the best mean Dice is written into a float16 copy of the checkpoint (``--out``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_nuclei_model import is_validation  # noqa: E402
from train_nuclei_student import add_teacher_refine_option, teacher_refine  # noqa: E402

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core.io import read_image  # noqa: E402
from napari_cellseg.core.metrics import dice, evaluate  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def cache_probabilities(backend) -> None:
    """The student's network runs once per tile; later runs reuse its maps."""
    compute, cache = backend.probabilities, {}

    def cached(tile, augmented=False):
        key = hashlib.sha1(np.ascontiguousarray(tile).tobytes()).hexdigest() + str(tile.shape) + str(augmented)
        if key not in cache:
            cache[key] = compute(tile, augmented=augmented)
        return cache[key]

    backend.probabilities = cached


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", default="nuclei")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="write the calibrated float16 checkpoint here")
    add_teacher_refine_option(parser)
    args = parser.parse_args(argv)
    from napari_cellseg.unet_student.model import compact_checkpoint

    ids = [r["id"] for r in csv.DictReader(open(args.data / "metadata.csv")) if not is_validation(r["id"])]
    ids = sorted(ids)[: 2 * args.images: 2]
    student, teacher = load_model(args.student, device="cpu"), load_model(args.teacher, device="cpu")
    refine = teacher_refine(args)
    cache_probabilities(student)
    default = student.postprocess
    scores = {t: [] for t in THRESHOLDS}
    for image_id in ids:
        image = read_image(args.data / "images" / f"{image_id}.png")
        truth = read_image(args.data / "labels" / f"{image_id}.png")
        taught = segment(image, teacher, refine=refine).labels
        for t in THRESHOLDS:
            student.postprocess = dataclasses.replace(default, fg_threshold=t)
            labels = segment(image, student).labels
            scores[t].append((dice(labels, taught), evaluate(labels, truth, with_coco=False)["f1_50"]))
    table = {t: {"dice_vs_teacher": round(float(np.mean([s[0] for s in v])), 4),
                 "f1_50_vs_truth": round(float(np.mean([s[1] for s in v])), 4)} for t, v in scores.items()}
    best = max(table, key=lambda t: table[t]["dice_vs_teacher"])
    print(json.dumps({"images": len(ids), "teacher": args.teacher, "by_fg_threshold": table, "best": best,
                      "was": default.fg_threshold}, indent=1))
    if args.out:
        postprocess = dataclasses.replace(default, fg_threshold=best).as_dict()
        compact_checkpoint(args.student, args.out, postprocess=postprocess,
                           calibration={"fg_threshold": best, "images": len(ids), "split": "training",
                                        "objective": "mean foreground Dice against the teacher"})
        print(f"wrote {args.out} with fg_threshold {best}")


if __name__ == "__main__":
    main()
