"""Fine-tuning on a modality the default model has never seen: Usiigaci phase contrast.

    python benchmarks/bench_finetune_usiigaci.py [--data ../shared/data/usiigaci] [--epochs 40] [--zoom 0.5]

Starts from the shipped ``nuclei`` model, fine-tunes it with the plugin's own path
(``export_dataset`` -> ``finetune_iter``, ultralytics' trainer on the CPU) on part of the
Usiigaci images, and prints F1 at IoU 0.5 and the DSB score on the held-out images, before
and after (goal: F1 >= 0.85 after). The split is fixed: ``split_names(names, 0.3, seed=0)``
holds out 4 of the 13 images; the fine-tuning set's own validation images come from the
remaining 9.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def load_pairs(data: Path):
    import tifffile
    from skimage.io import imread

    for image_path in sorted((data / "images").glob("*.tif")):
        labels_path = data / "labels" / f"{image_path.stem}.png"
        yield image_path.stem, tifffile.imread(image_path), imread(labels_path).astype(np.int32)


def score(model, pairs, **kwargs) -> dict:
    from napari_cellseg import segment
    from napari_cellseg.core.metrics import dsb_score, matching_stats

    f1, dsb, counts = [], [], []
    for _, image, truth in pairs:
        predicted = segment(image, model, **kwargs).labels
        stats = matching_stats(predicted, truth)
        f1.append(stats[0].f1)
        dsb.append(dsb_score(stats))
        counts.append((int(len(np.unique(predicted)) - 1), int(len(np.unique(truth)) - 1)))
    return {"f1_50": round(float(np.mean(f1)), 3), "dsb_score": round(float(np.mean(dsb)), 3),
            "objects_predicted_vs_true": counts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "usiigaci"))
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--zoom", type=float, default=0.5)
    parser.add_argument("--lr0", type=float, default=0.0005)
    parser.add_argument("--out", default=None, help="keep the fine-tuned model here")
    parser.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ultralytics training argument, e.g. flipud=0.5 (repeatable)")
    args = parser.parse_args(argv)

    from napari_cellseg import load_model
    from napari_cellseg.core.datasets import export_dataset, split_names
    from napari_cellseg.core.finetune import finetune_iter
    from napari_cellseg.core.pipeline import run

    pairs = list(load_pairs(Path(args.data)))
    if not pairs:
        raise SystemExit(f"{args.data}: no images/*.tif with labels/*.png")
    held_out = set(split_names([name for name, _, _ in pairs], 0.3, seed=0))
    train = [p for p in pairs if p[0] not in held_out]
    test = [p for p in pairs if p[0] in held_out]
    base = load_model(args.model, device="cpu")
    extra = {}
    for item in args.train_arg:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    figures = {"held_out": sorted(held_out), "n_train_images": len(train), "epochs": args.epochs, "zoom": args.zoom,
               "lr0": args.lr0, "train_args": extra}
    figures["before_at_model_zoom"] = score(base, test)
    # the untouched model at the fine-tuning scale too: how much is scale, how much is learning
    imgsz = base.info.train_imgsz or 640
    figures["before_at_finetune_zoom"] = score(base, test, imgsz=imgsz, tile=round(imgsz / args.zoom))
    print(json.dumps(figures), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="usiigaci-finetune-"))
    data_yaml = export_dataset(train, workdir / "dataset", fmt="yolo", val_fraction=0.2, seed=0)
    out = Path(args.out) if args.out else workdir / "usiigaci.pt"
    started = time.perf_counter()

    def on_progress(progress):
        if progress.metrics:
            print(f"epoch {progress.epoch}: {progress.losses} {progress.metrics}", file=sys.stderr, flush=True)

    # a gentle schedule: ultralytics' default warm-up (bias lr 0.1) wrecks a pretrained head on 7 images
    result = run(finetune_iter(base.info.path, data_yaml, out, epochs=args.epochs, batch=args.batch,
                               zoom=args.zoom, device="cpu", workdir=workdir / "train", optimizer="AdamW",
                               lr0=args.lr0, warmup_epochs=1, warmup_bias_lr=args.lr0, patience=args.epochs,
                               **extra), on_progress)
    figures["training_minutes"] = round((time.perf_counter() - started) / 60, 1)
    tuned = load_model(result.path, device="cpu")
    figures["after"] = score(tuned, test)
    figures["goal_f1_50"] = 0.85
    figures["model"] = str(result.path)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
