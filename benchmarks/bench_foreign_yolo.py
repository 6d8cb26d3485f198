"""A user's own ultralytics checkpoint on real data: ultralytics' predict against ``napari-cellseg segment``.

Trains a YOLO11n-seg with ultralytics' defaults at imgsz 320 (each image letterboxed to 320) on DSB2018
images for a fixed CPU time budget, starting from the shipped nuclei weights (``--init scratch``: from
yolo11n-seg.yaml's random weights; nothing is downloaded), then scores, on held-out DSB2018 fluorescence
images that neither it nor the shipped model ever trained on (the shipped model's validation split),
``model.predict(img, imgsz=320, max_det=1000, retina_masks=True)`` and the plugin's defaults with the same
checkpoint (and, for comparison, ``native=True``: full resolution, the plugin's old default), with the
DSB score and F1@0.5 of core.metrics. Prints a markdown table (docs/yolo.md).

    python benchmarks/bench_foreign_yolo.py --minutes 9 --workdir /tmp/dsb_yolo320
    python benchmarks/bench_foreign_yolo.py --checkpoint /tmp/dsb_yolo320/run/weights/last.pt
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"


def held_out(image_id: str) -> bool:
    """The shipped nuclei model's validation split (scripts/train_nuclei_model.py): never trained on."""
    return hashlib.sha1(image_id.encode()).digest()[0] < 38


def trained_on(image_id: str) -> bool:
    """The training images: a quarter of the ids (first byte of the sha1 < 64) are kept out."""
    return hashlib.sha1(image_id.encode()).digest()[0] >= 64


def read(data: Path, image_id: str):
    from PIL import Image

    rgb = np.asarray(Image.open(data / "images" / f"{image_id}.png").convert("RGB"))
    labels = np.asarray(Image.open(data / "labels" / f"{image_id}.png")).astype(np.int32)
    return rgb, labels


def train(data: Path, rows: list[dict], workdir: Path, imgsz: int, minutes: float, init: str) -> Path:
    from ultralytics import YOLO

    from napari_cellseg.backends import MODELS_DIR, NAMED_MODELS
    from napari_cellseg.core.datasets import write_yolo_dataset

    yaml = workdir / "data" / "data.yaml"
    if not yaml.is_file():  # written once (slow: polygons of every nucleus), reused by later runs
        train_ids = [r["id"] for r in rows if trained_on(r["id"])]
        samples = ((i, *read(data, i)) for i in train_ids)
        yaml = write_yolo_dataset(samples, workdir / "data", val_names=train_ids[:20], class_names=["nucleus"])
    model = YOLO("yolo11n-seg.yaml")
    if init == "shipped":
        model = model.load(str(MODELS_DIR / NAMED_MODELS["nuclei"]))
    model.train(data=str(yaml), imgsz=imgsz, epochs=100, time=minutes / 60, batch=16, device="cpu", workers=0,
                plots=False, project=str(workdir), name="run", exist_ok=True, pretrained=init == "shipped",
                amp=False, val=False, verbose=False, seed=0)
    return workdir / "run" / "weights" / "last.pt"


def ultralytics_labels(model, rgb: np.ndarray, imgsz: int) -> tuple[np.ndarray, dict]:
    result = model.predict(rgb[..., ::-1].copy(), imgsz=imgsz, max_det=1000, retina_masks=True, device="cpu",
                           verbose=False)[0]
    labels, scores = np.zeros(rgb.shape[:2], np.int32), {}
    if result.masks is not None:
        masks = result.masks.data.cpu().numpy() > 0.5
        conf = result.boxes.conf.cpu().numpy()
        for i in np.argsort(-conf):
            free = masks[i] & (labels == 0)
            if free.sum() >= 4:  # leftovers of a duplicate dropped, as the plugin's stitcher does
                labels[free] = len(scores) + 1
                scores[len(scores) + 1] = float(conf[i])
    return labels, scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--minutes", type=float, default=9.0, help="CPU training budget")
    parser.add_argument("--workdir", type=Path, default=Path("dsb_yolo320"))
    parser.add_argument("--checkpoint", type=Path, help="skip training: score this checkpoint")
    parser.add_argument("--init", choices=("shipped", "scratch"), default="shipped",
                        help="start from the shipped nuclei weights or from random ones")
    parser.add_argument("--limit", type=int, default=0, help="score at most this many held-out images")
    args = parser.parse_args(argv)

    from ultralytics import YOLO

    from napari_cellseg import load_model, segment
    from napari_cellseg.core.metrics import coco_mask_map, dsb_score, matching_stats

    with open(args.data / "metadata.csv") as fh:
        rows = list(csv.DictReader(fh))
    started = time.perf_counter()
    checkpoint = args.checkpoint or train(args.data, rows, args.workdir, args.imgsz, args.minutes, args.init)
    trained = time.perf_counter() - started
    test_ids = [r["id"] for r in rows if held_out(r["id"]) and r["modality_guess"] == "fluorescence"]
    if args.limit:
        test_ids = test_ids[:args.limit]
    reference, ours = YOLO(str(checkpoint)), load_model(checkpoint, device="cpu")
    methods = {
        f"ultralytics model.predict(imgsz={args.imgsz}, max_det=1000, retina_masks=True)":
            lambda rgb: ultralytics_labels(reference, rgb, args.imgsz),
        "napari-cellseg segment, defaults": lambda rgb: _plugin(segment(rgb, ours)),
        "napari-cellseg segment --native (full resolution, tiled)":
            lambda rgb: _plugin(segment(rgb, ours, native=True)),
    }
    table = {name: {"dsb": [], "f1": [], "count": [], "ap50": []} for name in methods}
    for image_id in test_ids:
        rgb, truth = read(args.data, image_id)
        for name, method in methods.items():
            labels, scores = method(rgb)
            stats = matching_stats(labels, truth)
            table[name]["dsb"].append(dsb_score(stats))
            table[name]["f1"].append(stats[0].f1)
            table[name]["count"].append(abs(stats[0].fp - stats[0].fn))
            table[name]["ap50"].append(coco_mask_map(labels, truth, scores)["ap50"])
    trained_text = f" (trained {trained / 60:.1f} min)" if not args.checkpoint else ""
    print(f"checkpoint {checkpoint}{trained_text}; {len(test_ids)} held-out DSB2018 "
          "fluorescence images")
    print("| method | DSB score | AP50 | F1@0.5 | mean abs count error |")
    print("|---|---|---|---|---|")
    for name, values in table.items():
        print(f"| {name} | {np.mean(values['dsb']):.3f} | {np.nanmean(values['ap50']):.3f} | "
              f"{np.mean(values['f1']):.3f} | {np.mean(values['count']):.1f} |")


def _plugin(result):
    return result.labels, dict(zip(result.objects["label"].tolist(), result.objects["score"].tolist()))


if __name__ == "__main__":
    main()
