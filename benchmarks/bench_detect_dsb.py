"""Counting nuclei with a YOLO11n box detector on DSB2018 (issue 29), beside the shipped segmentation model.

Split (written to ``benchmarks/dsb_detect_split.json``): the 10 % test images are drawn (seeded) from the
validation images of the shipped ``nuclei`` model (``sha1(id)[0] < 38``, MODEL_CARD.md), so neither the
detector nor the shipped model (nor its contour U-Net and bright-field specialist, trained on its training
images) has seen them; the 70 % train and 20 % val images are drawn from the rest.

Dataset (the plugin's own writer, ``core.datasets.write_yolo_box_dataset``, a Roboflow "YOLO" layout): every
image normalised to 8 bits exactly as the plugin's export does (``core.normalize.model_rgb``); boxes derived
from the instance masks (``core.datasets.boxes_from_labels``). The training images are cut into 256x256
native-resolution tiles (``core.tiling.tile_grid``, overlap 64), trained at imgsz 384: zoom 1.5, the scale of
the shipped segmentation model, which the detector's tiled inference then keeps; val and test are the whole
images.

Training: the plugin's ``pipeline.finetune.finetune_detect_iter`` (what ``napari-cellseg finetune --task
detect`` runs), started from the shipped ``nuclei`` checkpoint (YOLO11n with its matching weights: backbone,
neck and box head; legitimate here only because the test images are unseen by it) or ``--start yolo11n.yaml``
(from scratch). It chooses the best-F1 confidence on the val split and scores the test split at it.

Evaluation: ``pipeline.detect.evaluate_detector_iter`` (what ``napari-cellseg evaluate --model`` runs) on val
(threshold) and test (at that threshold; the test's own best F1 is reported too, labelled), on fluorescence
test images and on all of them. The shipped ``nuclei`` segmentation model runs through ``napari_cellseg.segment``
on the same test images; its masks become boxes (score 1) for box P/R/F1 and count error, and its mask F1@0.5
is reported beside.

    python benchmarks/bench_detect_dsb.py --work /tmp/dsbdet --epochs 30 --time 1.1
    python benchmarks/bench_detect_dsb.py --work /tmp/dsbdet --weights det.pt   # evaluate a given detector
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "dsb2018"
SPLIT_FILE = HERE / "dsb_detect_split.json"
TILE, OVERLAP, IMGSZ = 256, 64, 384


def seg_validation(image_id: str) -> bool:
    """The shipped nuclei model's validation images (scripts/train_nuclei_model.py, MODEL_CARD.md)."""
    return hashlib.sha1(image_id.encode()).digest()[0] < 38


def make_split(ids: list[str], seed: int = 0) -> dict[str, list[str]]:
    ids = sorted(ids)
    n = len(ids)
    rng = np.random.default_rng(seed)
    pool = sorted(i for i in ids if seg_validation(i))
    n_test = int(round(0.1 * n))
    if n_test > len(pool):
        raise SystemExit(f"only {len(pool)} images unseen by the shipped model, {n_test} needed")
    test = sorted(rng.choice(pool, n_test, replace=False).tolist())
    rest = sorted(set(ids) - set(test))
    val = sorted(rng.choice(rest, int(round(0.2 * n)), replace=False).tolist())
    train = sorted(set(rest) - set(val))
    return {"seed": seed, "rule": "test: seeded draw from the shipped nuclei model's validation images "
            "(sha1(id)[0] < 38); train/val: seeded 70/20 of the rest", "train": train, "val": val, "test": test}


def build_dataset(data: Path, split: dict, out: Path) -> Path:
    from napari_cellseg.core.datasets import boxes_from_labels, write_yolo_box_dataset
    from napari_cellseg.core.io import read_image
    from napari_cellseg.core.normalize import model_rgb
    from napari_cellseg.core.tiling import tile_grid

    if (out / "data.yaml").is_file():
        return out / "data.yaml"

    def samples():
        for part in ("train", "val", "test"):
            for image_id in split[part]:
                image = model_rgb(np.asarray(read_image(data / "images" / f"{image_id}.png")))
                labels = np.asarray(read_image(data / "labels" / f"{image_id}.png"))
                if part != "train":
                    yield part, image_id, image, labels
                    continue
                for k, t in enumerate(tile_grid(*labels.shape, TILE, OVERLAP)):
                    yield part, f"{image_id}_{k:03d}", image[t.slices], labels[t.slices]

    split_of, rows = {}, []

    def boxed():
        for part, name, image, labels in samples():
            boxes = boxes_from_labels(labels)
            boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)]
            split_of[name] = part
            rows.append(part)
            yield name, image, boxes, np.zeros(len(boxes), np.int64)

    # split_of is filled as the samples are drawn, before each is written
    data_yaml = write_yolo_box_dataset(boxed(), out, split_of=split_of, class_names=("nucleus",))
    print(f"dataset {out}: {rows.count('train')} training tiles, {rows.count('val')} val images, "
          f"{rows.count('test')} test images", flush=True)
    return data_yaml


def train(data_yaml: Path, out: Path, start: str, epochs: int, hours: float | None, batch: int, workdir: Path):
    from napari_cellseg.pipeline.finetune import finetune_detect_iter

    extra = dict(optimizer="AdamW", lr0=0.001, warmup_epochs=1, close_mosaic=3, degrees=0.0, flipud=0.5,
                 fliplr=0.5, scale=0.3, hsv_h=0.0, max_det=1000, patience=100)
    if hours:
        extra["time"] = hours
    job = finetune_detect_iter(start, data_yaml, out, epochs=epochs, batch=batch, imgsz=IMGSZ, device="cpu",
                               workdir=workdir, **extra)
    started = time.perf_counter()
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if progress.get("metrics"):
            print(f"[{time.perf_counter() - started:7.0f} s] epoch {progress.epoch}: {progress.get('losses')} "
                  f"{progress.get('metrics')}", flush=True)
    print(f"trained {len(result.history)} epochs in {time.perf_counter() - started:.0f} s: {result.path}", flush=True)
    return result, time.perf_counter() - started


def subset_yaml(data_yaml: Path, split: str, names: list[str], out: Path) -> Path:
    """A data.yaml whose ``split`` folder holds only ``names`` (symlinks), to score a subset (fluorescence)."""
    src = data_yaml.parent / {"val": "valid"}.get(split, split)
    for sub in ("images", "labels"):
        (out / split / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        for sub, ext in (("images", ".png"), ("labels", ".txt")):
            link = out / split / sub / f"{name}{ext}"
            if not link.exists():
                link.symlink_to(src / sub / f"{name}{ext}")
    (out / "data.yaml").write_text(f"train: ../{split}/images\nval: ../{split}/images\ntest: ../{split}/images\n"
                                   "nc: 1\nnames: ['nucleus']\n")
    return out / "data.yaml"


def evaluate_detector(weights: Path, data_yaml: Path, split: dict, modality: dict, work: Path,
                      reuse_calibration: bool = False) -> dict:
    """Val (best-F1 threshold) -> test at it, all and fluorescence test images. ``reuse_calibration``: take the
    val and all-test figures the fine-tuning stored in the checkpoint (``conf_calibration``: the same plugin
    call on the same dataset) instead of scoring them again; the fluorescence subset is always scored."""
    from napari_cellseg import load_model
    from napari_cellseg.pipeline.detect import evaluate_detector_iter
    from napari_cellseg.pipeline.segment import run

    detector = load_model(weights, device="cpu")
    started = time.perf_counter()
    stored = detector.info.extra.get("conf_calibration") or {} if reuse_calibration else {}
    if "val" in stored and "test" in stored:
        out = {"val": stored["val"], "conf": stored["conf"], "test_all": stored["test"], "reused_calibration": True}
        todo = ["test_fluorescence"]
    else:
        val = run(evaluate_detector_iter(detector, data_yaml, split="val"))
        out = {"val": val.summary(), "conf": round(val.best_f1_conf, 3)}
        todo = ["test_all", "test_fluorescence"]
    fluo = [i for i in split["test"] if modality.get(i) == "fluorescence"]
    yamls = {"test_all": data_yaml, "test_fluorescence": subset_yaml(data_yaml, "test", fluo, work / "fluo")}
    for key in todo:
        ev = run(evaluate_detector_iter(detector, yamls[key], split="test", conf=out["conf"]))
        out[key] = ev.summary()  # at the val threshold; best_f1 / best_f1_conf: the test's own
        out[key + "_rows"] = ev.rows
    out["seconds"] = time.perf_counter() - started
    return out


def shipped_segmentation(data: Path, split: dict, modality: dict) -> dict:
    from napari_cellseg import load_model, segment
    from napari_cellseg.core.box_metrics import BoxSample, evaluate_boxes
    from napari_cellseg.core.datasets import boxes_from_labels
    from napari_cellseg.core.io import read_image
    from napari_cellseg.core.metrics import evaluate

    model = load_model("nuclei", device="cpu")
    samples, rows = [], []
    started = time.perf_counter()
    for image_id in split["test"]:
        image = read_image(data / "images" / f"{image_id}.png")
        truth = np.asarray(read_image(data / "labels" / f"{image_id}.png"))
        labels = np.asarray(segment(image, model).labels)
        pred_boxes, gt_boxes = boxes_from_labels(labels), boxes_from_labels(truth)
        samples.append((image_id, BoxSample(image_id, pred_boxes, np.ones(len(pred_boxes), np.float32), gt_boxes,
                                            np.zeros(len(pred_boxes), np.int64), np.zeros(len(gt_boxes), np.int64))))
        row = evaluate(labels, truth, with_coco=False)
        rows.append({"id": image_id, "n_pred": row["n_pred"], "n_gt": row["n_gt"], "mask_f1_50": row["f1_50"],
                     "dsb_score": row["dsb_score"]})
    out = {"seconds": time.perf_counter() - started, "rows": rows}
    for key, keep in (("all", lambda i: True), ("fluorescence", lambda i: modality.get(i) == "fluorescence")):
        chosen = [s for i, s in samples if keep(i)]
        ev = evaluate_boxes(chosen, conf=0.5)
        sub = [r for r in rows if keep(r["id"])]
        tp = fp = fn = 0  # mask F1@0.5 pooled over images (as the box F1)
        for r in sub:
            f1 = r["mask_f1_50"]
            # pooled from counts: tp = f1 * (n_pred + n_gt) / 2
            t = f1 * (r["n_pred"] + r["n_gt"]) / 2
            tp, fp, fn = tp + t, fp + r["n_pred"] - t, fn + r["n_gt"] - t
        out[key] = {"n_images": len(chosen), "box_precision": ev.precision, "box_recall": ev.recall, "box_f1": ev.f1,
                    "mask_f1_50": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
                    "count_mae": ev.count_mae, "relative_count_error": ev.relative_count_error,
                    "n_pred": ev.n_pred, "n_gt": ev.n_gt}
    return out


def table(det: dict, seg: dict | None) -> str:
    lines = ["| test images | model | threshold | P@0.5 | R@0.5 | F1@0.5 | mAP50 | mAP50-95 | count MAE | "
             "relative count error | objects (pred / true) |", "|---" * 11 + "|"]
    for key, label in (("fluorescence", "fluorescence"), ("all", "all")):
        d = det[f"test_{key}"]
        lines.append(f"| {label} | YOLO11n detector (val threshold) | {det['conf']:.3f} | {d['precision']:.3f} | "
                     f"{d['recall']:.3f} | {d['f1']:.3f} | {d['map50']:.3f} | {d['map50_95']:.3f} | "
                     f"{d['count_mae']:.2f} | {d['relative_count_error']:.1%} | {d['n_pred']} / {d['n_gt']} |")
        lines.append(f"| {label} | detector, the test's own best F1 (not a valid choice) | {d['best_f1_conf']:.3f} | | | "
                     f"{d['best_f1']:.3f} | | | | | |")
        if seg:
            s = seg[key]
            lines.append(f"| {label} | shipped `nuclei` segmentation, masks as boxes (mask F1@0.5 {s['mask_f1_50']:.3f}) | "
                         f"model's own | {s['box_precision']:.3f} | {s['box_recall']:.3f} | {s['box_f1']:.3f} | n/a | n/a | "
                         f"{s['count_mae']:.2f} | {s['relative_count_error']:.1%} | {s['n_pred']} / {s['n_gt']} |")
    v = det["val"]
    lines.append(f"\nval split: best F1 {v['best_f1']:.3f} at confidence "
                 f"{v['best_f1_conf']:.3f}, mAP50 {v['map50']:.3f}, mAP50-95 {v['map50_95']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_detect_dsb"))
    parser.add_argument("--weights", type=Path, help="evaluate this detector (skip training)")
    parser.add_argument("--start", default="nuclei", help="nuclei (transfer, default) or yolo11n.yaml (scratch)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--time", type=float, default=None, help="ultralytics' training time limit [hours]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-seg", action="store_true", help="skip the shipped segmentation model")
    parser.add_argument("--seg-only", action="store_true", help="only the shipped segmentation model's count")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--reuse-calibration", action="store_true", help="with --weights: take the val and test "
                        "figures that its fine-tuning on this dataset stored, score only the fluorescence subset")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: no DSB2018 folder", file=sys.stderr)
        return 1
    ids = sorted(p.stem for p in (args.data / "images").glob("*.png"))
    modality = {r["id"]: r["modality_guess"] for r in csv.DictReader(open(args.data / "metadata.csv"))}
    split = make_split(ids, args.seed)
    SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
    print(f"split: {len(split['train'])} train, {len(split['val'])} val, {len(split['test'])} test "
          f"({sum(modality.get(i) == 'fluorescence' for i in split['test'])} fluorescence) -> {SPLIT_FILE}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    seg_path = args.work / "shipped_segmentation.json"  # its own file: it may run beside the training
    if args.seg_only or (not args.no_seg and not seg_path.is_file()):
        seg_path.write_text(json.dumps(shipped_segmentation(args.data, split, modality), indent=1, default=float))
    seg = json.loads(seg_path.read_text()) if seg_path.is_file() else None
    if args.seg_only:
        print(json.dumps({k: v for k, v in seg.items() if k != "rows"}, indent=1))
        return 0
    data_yaml = build_dataset(args.data, split, args.work / "dataset")
    if args.build_only:
        return 0
    weights = args.weights
    if weights is None and (args.work / "detector.pt").is_file() and "training" in results:
        weights = args.work / "detector.pt"  # trained by an earlier call: evaluate it
        args.reuse_calibration = True
    if weights is None:
        weights = args.work / "detector.pt"
        result, seconds = train(data_yaml, weights, args.start, args.epochs, args.time, args.batch, args.work / "runs")
        results["training"] = {"seconds": seconds, "epochs": len(result.history), "start": args.start,
                               "history": result.history, "calibration": result.calibration}
        results_path.write_text(json.dumps(results, indent=1, default=float))
    results["detector"] = evaluate_detector(weights, data_yaml, split, modality, args.work,
                                            reuse_calibration=args.weights is None or args.reuse_calibration)
    results["detector"]["weights"] = str(weights)
    results_path.write_text(json.dumps(results, indent=1, default=float))
    print(table(results["detector"], seg))
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
