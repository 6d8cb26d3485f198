"""StarDist on this machine: the speed (and accuracy) reference of issue 30.

Runs in the side virtual environment of scripts/train_stardist_reference.py (TensorFlow + StarDist;
it imports nothing of napari_cellseg):

    nice /work/sdvenv/bin/python benchmarks/bench_stardist.py --model /work/stardist_ref/stardist_dsb2018_fluo \
        [--data ../shared/data/dsb2018] [--all-sizes] [--json out.json] [--save-labels DIR]

The images are those of benchmarks/bench_speed.py: the validation images of the model card's split
(sha1(image id)[0] < 38, ``is_validation`` of scripts/train_nuclei_model.py) that are 520x696 fluorescence
(13 in ../shared/data); ``--all-sizes`` takes every fluorescence validation image (61) instead. The model
is loaded once (its optimised thresholds) and warmed up on the first image; then each image is timed as
``model.predict_instances(normalize(img, 1, 99.8))`` (the normalisation included; wall clock via
perf_counter and the process's CPU seconds via process_time, medians over the images). Each prediction
is scored against the ground truth with stardist.matching.matching at IoU 0.5, 0.55, ..., 0.95: the DSB
score is the mean over those thresholds of tp / (tp + fp + fn), F1@0.5 the F1 at 0.5 (means over images).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 1.0, 0.05), 2))


def is_validation(image_id: str) -> bool:
    # the same as scripts/train_nuclei_model.is_validation
    return hashlib.sha1(image_id.encode()).digest()[0] < 38


def validation_images(data: Path, height: int | None = 520, width: int | None = 696,
                      modality: str = "fluorescence") -> list[str]:
    # the same selection as benchmarks/bench_speed.validation_images (height/width None: any size)
    rows = [r for r in csv.DictReader(open(data / "metadata.csv"))
            if is_validation(r["id"]) and r["modality_guess"] == modality
            and (height is None or int(r["height"]) == height) and (width is None or int(r["width"]) == width)]
    return sorted(r["id"] for r in rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("/work/stardist_ref/stardist_dsb2018_fluo"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--all-sizes", action="store_true", help="every fluorescence validation image (61)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--save-labels", type=Path, default=None, help="write <id>.npy predictions here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_stardist_reference import read_grey, read_labels

    import tensorflow as tf
    import stardist
    from csbdeep.utils import normalize
    from stardist.matching import matching
    from stardist.models import StarDist2D

    ids = validation_images(args.data, *((None, None) if args.all_sizes else (520, 696)))
    images = [read_grey(args.data / "images" / f"{i}.png") for i in ids]
    truths = [read_labels(args.data / "labels" / f"{i}.png") for i in ids]
    model = StarDist2D(None, name=args.model.name, basedir=str(args.model.parent))
    model.predict_instances(normalize(images[0], 1, 99.8), verbose=False)  # warm-up
    threads = {"cpu_count": os.cpu_count(),
               "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
               "note": "0 = TensorFlow's default (one per core)",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS")}
    print(f"{len(ids)} validation images ({'all sizes' if args.all_sizes else '520x696'} fluorescence); "
          f"TF {tf.__version__}, stardist {stardist.__version__}; threads {threads}; "
          f"thresholds {model.thresholds}", flush=True)

    rows = []
    for image_id, image, truth in zip(ids, images, truths):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        labels, _ = model.predict_instances(normalize(image, 1, 99.8), verbose=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = [matching(truth, labels, thresh=t) for t in THRESHOLDS]
        rows.append({"id": image_id, "shape": list(image.shape), "wall": wall, "cpu": cpu,
                     "n_pred": int(stats[0].n_pred), "n_gt": int(stats[0].n_true),
                     "dsb": float(np.mean([s.tp / (s.tp + s.fp + s.fn) if s.tp + s.fp + s.fn else 1.0
                                           for s in stats])),
                     "f1": float(stats[0].f1)})
        if args.save_labels:
            args.save_labels.mkdir(parents=True, exist_ok=True)
            np.save(args.save_labels / f"{image_id}.npy", labels.astype(np.int32))
        print(f"{image_id[:12]} {image.shape} wall {wall:.3f} s cpu {cpu:.3f} s dsb {rows[-1]['dsb']:.3f} "
              f"f1 {rows[-1]['f1']:.3f}", flush=True)

    summary = {"wall_median": statistics.median(r["wall"] for r in rows),
               "cpu_median": statistics.median(r["cpu"] for r in rows),
               "dsb_mean": float(np.mean([r["dsb"] for r in rows])),
               "f1_50_mean": float(np.mean([r["f1"] for r in rows]))}
    print("\n| run | s/image (wall, median) | CPU s/image | DSB | F1@0.5 |")
    print("|---|---|---|---|---|")
    print(f"| StarDist2D (from scratch, {len(ids)} images) | {summary['wall_median']:.3f} "
          f"| {summary['cpu_median']:.3f} | {summary['dsb_mean']:.3f} | {summary['f1_50_mean']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"tensorflow": tf.__version__, "stardist": stardist.__version__,
                                         "model": str(args.model), "thresholds": dict(model.thresholds._asdict()),
                                         "threads": threads, "images": ids, "summary": summary, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
