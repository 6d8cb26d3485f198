"""Phenotype classifier throughput: crops per second, ResNet50, 40x40, one channel, batched (goal >= 300/s),
and the three-class case's accuracy (issue 27).

    python benchmarks/bench_classifier.py [--crops 2048] [--batch 256] [--no-accuracy]

Accuracy: 60 generated crops per class (bright nucleus, three aggregates, diffuse cytoplasm), trained
with the CLI's defaults for 3 epochs (a fifth held out for validation), then classified in eval mode:
20 unseen crops per class from another generator seed.

Also times the raw torchvision model on the same tensors (the plugin's overhead ratio), the whole
per-frame path (cropping + classification) on a synthetic tracked movie, and the CPU's float32
matrix-product peak next to the arithmetic one crop needs: what throughput the machine allows at all.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-accuracy", action="store_true", help="throughput only")
    parser.add_argument("--device", default="cpu", help="training device for the accuracy run")
    args = parser.parse_args(argv)

    import torch

    from napari_cellseg.classifier.model import Classifier, build_resnet50
    from napari_cellseg.classifier.predict import classify_iter
    from napari_cellseg.pipeline.segment import run

    model = build_resnet50(8, 1).eval()
    raw_model = build_resnet50(8, 1).eval()
    raw_model.load_state_dict(model.state_dict())  # same weights, torchvision's default memory layout
    clf = Classifier(model, [f"c{i}" for i in range(8)], 1, 40)
    crops = np.random.default_rng(0).random((args.crops, 1, 40, 40)).astype(np.float32)
    clf.predict(crops[: args.batch], args.batch)  # warm-up
    t = time.perf_counter()
    clf.predict(crops, args.batch)
    plugin = time.perf_counter() - t
    tensor = torch.from_numpy(crops)
    with torch.inference_mode():
        raw_model(tensor[: args.batch])  # warm-up
        t = time.perf_counter()
        for start in range(0, len(crops), args.batch):
            torch.softmax(raw_model(tensor[start:start + args.batch]), 1)
    raw = time.perf_counter() - t

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        raw_model(tensor[:1])
    gflop_per_crop = counter.get_total_flops() / 1e9
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    peak_gflops = 10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9

    frames, side, cells = 20, 256, 25
    tracked = np.zeros((frames, side, side), np.int32)
    for k in range(cells):
        y, x = divmod(k, 5)
        tracked[:, 20 + y * 45: 36 + y * 45, 20 + x * 45: 36 + x * 45] = k + 1
    movie = np.random.default_rng(1).random((frames, side, side)).astype(np.float32)
    t = time.perf_counter()
    run(classify_iter(movie, tracked, clf))
    movie_s = time.perf_counter() - t
    figures = {
        "torch_threads": torch.get_num_threads(),
        "crops_per_s": round(args.crops / plugin, 1),
        "raw_torchvision_crops_per_s": round(args.crops / raw, 1),
        "overhead_ratio": round(plugin / raw, 3),
        "movie_cells_per_s_with_cropping": round(frames * cells / movie_s, 1),
        "gflop_per_crop": round(gflop_per_crop, 3),
        "cpu_matmul_peak_gflops": round(peak_gflops, 1),
        "plugin_gflops": round(gflop_per_crop * args.crops / plugin, 1),
        "gflops_needed_for_300_crops_per_s": round(gflop_per_crop * 300, 1),
    }
    if not args.no_accuracy:
        figures.update(three_class_accuracy(args.device))
    print(json.dumps(figures, indent=2))


def three_class_accuracy(device: str = "cpu", epochs: int = 3, seed: int = 0) -> dict:
    from napari_cellseg.classifier.crops import crop_file
    from napari_cellseg.classifier.synthetic import three_class_crops
    from napari_cellseg.classifier.train import DEFAULTS, train_iter
    from napari_cellseg.pipeline.segment import run

    import tempfile

    import tifffile

    def as_loaded(crops):  # the same path as crop files: resized to 40, normalised per crop
        with tempfile.TemporaryDirectory() as folder:
            out = []
            for i, crop in enumerate(crops):
                tifffile.imwrite(Path(folder) / f"{i}.tif", crop)
                out.append(crop_file(Path(folder) / f"{i}.tif", DEFAULTS["crop_size"]))
            return np.stack(out)

    train, train_labels = three_class_crops(60, seed=1)
    unseen, unseen_labels = three_class_crops(20, seed=2)
    start = time.perf_counter()
    result = run(train_iter(as_loaded(train), train_labels, ["nucleus", "aggregates", "cytoplasm"], epochs=epochs,
                            device=device, seed=seed))
    train_s = time.perf_counter() - start
    predicted = result.classifier.predict(as_loaded(unseen)).argmax(1)
    return {
        "three_class_train_s": round(train_s, 1),
        "three_class_best_epoch": result.best_epoch,
        "three_class_val_balanced_accuracy_eval_mode": round(result.evaluation.balanced_accuracy, 3),
        "three_class_unseen_accuracy_eval_mode": round(float(np.mean(predicted == unseen_labels)), 3),
        "three_class_notes": result.notes,
    }


if __name__ == "__main__":
    main()
