"""Train a StarDist2D from scratch on the DSB2018 fluorescence training images (speed reference, issue 30).

Runs in a SEPARATE virtual environment (StarDist needs TensorFlow, which the plugin never installs):

    python3.11 -m venv /work/sdvenv
    /work/sdvenv/bin/pip install stardist tensorflow-cpu
    nice /work/sdvenv/bin/python scripts/train_stardist_reference.py \
        --data ../shared/data/dsb2018 --out /work/stardist_ref --minutes 30

It imports nothing of napari_cellseg. The split is the model card's: an image is in validation when the
first byte of sha1(image id) is below 38 (``is_validation`` in scripts/train_nuclei_model.py, copied
here); validation images are never read. Of the fluorescence training images, ``--held-out`` (chosen
with a fixed seed) are kept out of training and used for Keras' validation loss and for
``optimize_thresholds``; the rest are trained on.

StarDist's defaults for 2D fluorescence (its ``2D_demo`` notebooks): ``Config2D(n_rays=32, grid=(2, 2),
n_channel_in=1)``, images normalised per image to percentiles 1-99.8, label holes filled, random
256x256 patches (``train_patch_size``), random flips / 90 degree rotations and intensity jitter.
Training is bounded by ``--epochs`` x ``--steps`` and by ``--minutes`` of wall time (checked after
each epoch). The model (config.json, weights_best/last, thresholds.json) is written under
``--out/--name``; a ``training.json`` next to it records the run.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np


def is_validation(image_id: str) -> bool:
    # the same as scripts/train_nuclei_model.is_validation
    return hashlib.sha1(image_id.encode()).digest()[0] < 38


def read_grey(path: Path) -> np.ndarray:
    """A DSB2018 PNG as one grey channel (the fluorescence PNGs are grey stored as RGB(A))."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.array(im)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1)
    return a.astype(np.float32)


def read_labels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im).astype(np.int32)


def training_ids(data: Path, modality: str = "fluorescence") -> list[str]:
    rows = csv.DictReader(open(data / "metadata.csv"))
    return sorted(r["id"] for r in rows if r["modality_guess"] == modality and not is_validation(r["id"]))


def augmenter(x, y):
    """Random flips / 90 degree rotations (image and labels alike) and intensity jitter (StarDist demo)."""
    k = np.random.randint(4)
    x, y = np.rot90(x, k), np.rot90(y, k)
    for axis in (0, 1):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--out", type=Path, default=Path("/work/stardist_ref"))
    parser.add_argument("--name", default="stardist_dsb2018_fluo")
    parser.add_argument("--epochs", type=int, default=400, help="StarDist's default train_epochs")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (StarDist's default)")
    parser.add_argument("--minutes", type=float, default=30.0, help="stop after the epoch that passes this")
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import tensorflow as tf
    from csbdeep.utils import normalize
    from stardist import fill_label_holes, __version__ as stardist_version
    from stardist.models import Config2D, StarDist2D

    ids = training_ids(args.data)
    rng = np.random.default_rng(args.seed)
    held = set(rng.choice(len(ids), size=args.held_out, replace=False).tolist())
    train_ids = [i for k, i in enumerate(ids) if k not in held]
    held_ids = [i for k, i in enumerate(ids) if k in held]
    assert not any(is_validation(i) for i in train_ids + held_ids)

    def load(id_list):
        xs = [normalize(read_grey(args.data / "images" / f"{i}.png"), 1, 99.8, axis=(0, 1)) for i in id_list]
        ys = [fill_label_holes(read_labels(args.data / "labels" / f"{i}.png")) for i in id_list]
        return xs, ys

    X, Y = load(train_ids)
    X_val, Y_val = load(held_ids)
    print(f"{len(X)} training images, {len(X_val)} held out (fluorescence, model-card split)", flush=True)

    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False,
                    train_patch_size=(256, 256), train_tensorboard=False, train_epochs=args.epochs, train_steps_per_epoch=args.steps)
    model = StarDist2D(conf, name=args.name, basedir=str(args.out))
    model.prepare_for_training()

    t0 = time.perf_counter()
    history = {"epoch_seconds": []}

    class TimeLimit(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            history["epoch_seconds"].append(time.perf_counter() - self._t)
            history["epochs_done"] = epoch + 1
            history["last_logs"] = {k: float(v) for k, v in (logs or {}).items()}
            if time.perf_counter() - t0 > args.minutes * 60:
                print(f"time limit reached after epoch {epoch + 1}", flush=True)
                self.model.stop_training = True

    model.callbacks.append(TimeLimit())
    model.train(X, Y, validation_data=(X_val, Y_val), augmenter=augmenter,
                epochs=args.epochs, steps_per_epoch=args.steps)
    train_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    thresholds = model.optimize_thresholds(X_val, Y_val)
    thresh_seconds = time.perf_counter() - t1

    record = {
        "stardist": stardist_version, "tensorflow": tf.__version__,
        "config": {"n_rays": 32, "grid": [2, 2], "train_patch_size": [256, 256],
                   "train_batch_size": conf.train_batch_size, "normalize_percentiles": [1, 99.8]},
        "n_train_images": len(X), "held_out_ids": held_ids,
        "epochs_planned": args.epochs, "steps_per_epoch": args.steps, "minutes_limit": args.minutes,
        "epochs_done": history.get("epochs_done"), "train_seconds": train_seconds,
        "epoch_seconds": history["epoch_seconds"], "last_logs": history.get("last_logs"),
        "thresholds": thresholds, "optimize_thresholds_seconds": thresh_seconds,
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    (args.out / args.name / "training.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k not in ("held_out_ids", "epoch_seconds")}), flush=True)


if __name__ == "__main__":
    main()
