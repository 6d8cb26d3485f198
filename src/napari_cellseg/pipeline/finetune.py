"""Fine-tuning: which family trains, and the score threshold chosen on the validation images, as generators.

``train_any_iter`` is the one place that picks the family (YOLO segmentation or detection, Mask R-CNN).
The YOLO training itself (ultralytics' trainer with progress and Cancel, packaging the best weights with
the plugin's metadata) is in :mod:`..yolo.train`; Mask R-CNN's in :mod:`..maskrcnn.train`. What needs the
pipeline stays here: the fine-tuned model is run through the segmentation pipeline on the dataset's
validation images to choose its score threshold (the one with the best mean F1 at IoU 0.5), stored in the
checkpoint as the model's own; a second one is calibrated for test-time augmented runs, whose fused scores
differ. A box detector's confidence is the best-F1 one on its val split (``evaluate_detector_iter``).
"""
from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

from ..core.progress import Progress
from ..core.result import FinetuneResult
from ..yolo import train as yolo_train
from ..yolo.train import store_calibration

__all__ = ["CONF_GRID", "calibrate_conf_iter", "finetune_architecture", "finetune_detect_iter", "finetune_iter",
           "store_calibration", "train_any_iter"]


# score thresholds tried by the calibration: ultralytics' 0.25 is often too low for a model
# fine-tuned on a few images, which then keeps fragments of cells at low scores
CONF_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def calibrate_conf_iter(model, samples, grid=CONF_GRID, *, tta: bool = False
                        ) -> Generator[tuple[int, int], None, dict]:
    """The score threshold with the best mean F1 at IoU 0.5 on ``samples`` ((name, image, labels)),
    yielding (images done, images) after each image. Each image is segmented once at the lowest
    threshold (with test-time augmentation when ``tta``); a higher one keeps the objects scoring
    at least that (``SegmentationResult.labels_scoring_at_least``). Ties go to the threshold
    nearest ultralytics' default 0.25."""
    import numpy as np

    from ..backends import load_model
    from ..core.backend import DEFAULT_CONF
    from ..core.metrics import matching_stats
    from .segment import run, segment_iter

    model = load_model(model, device="cpu") if isinstance(model, (str, Path)) else model
    f1 = {conf: [] for conf in grid}
    for k, (_, image, truth) in enumerate(samples):
        result = run(segment_iter(image, model, conf=min(grid), tta=tta))
        for conf in grid:
            f1[conf].append(matching_stats(result.labels_scoring_at_least(conf), truth)[0].f1)
        yield k + 1, len(samples)
    mean_f1 = {conf: round(float(np.mean(values)), 4) for conf, values in f1.items()}
    best = max(grid, key=lambda conf: (mean_f1[conf], -abs(conf - DEFAULT_CONF)))
    return {"conf": best, "tta": tta, "objective": "mean F1 at IoU 0.5 on the validation images",
            "images": [name for name, _, _ in samples], "f1_50_by_conf": mean_f1}


def finetune_architecture(model: str | os.PathLike | None, arch: str = "auto") -> str:
    """'yolo' or 'maskrcnn': the one asked for, or that of the model to start from."""
    if arch != "auto":
        return arch
    from ..backends import resolve_model
    from ..maskrcnn import backend as maskrcnn

    _, path = resolve_model(model) if model else (None, None)
    return "maskrcnn" if path is not None and maskrcnn.probe(path) else "yolo"


def _coco_samples(json_path: Path, val_fraction: float) -> tuple[list, dict]:
    """Training samples (with classes) of a COCO file and the Mask R-CNN keyword arguments: the class
    names, and the validation images: the file's own val json (``train*.json`` -> ``val*.json``
    beside it) where there is one, else a seeded ``val_fraction`` of its images."""
    import numpy as np

    from ..core.datasets import coco_categories, read_coco_dataset

    samples = list(read_coco_dataset(json_path, with_classes=True))
    extra = {"class_names": [name for _, name in coco_categories(json_path)] or None}
    val_json = json_path.with_name(json_path.name.replace("train", "val")) if "train" in json_path.name else None
    if val_json is not None and val_json.is_file() and val_json != json_path:
        val = [s for s in read_coco_dataset(val_json, with_classes=True) if np.asarray(s[2]).max() > 0]
        if val:
            extra["val_samples"] = val
            return samples, extra
    extra["val_fraction"] = val_fraction
    return samples, extra


def train_any_iter(
    model: str | Path | None, out: str | Path, *, task: str = "segment", arch: str = "auto",
    data_yaml: str | Path | None = None, samples=None, epochs: int = 10, batch: int | None = None,
    device: str = "cpu", imgsz: int | None = None, zoom: float | None = None,
    backbone_weights: str | Path | None = None, val_fraction: float = 0.2,
) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune ``model``, or train a new Mask R-CNN, on a YOLO dataset (``data_yaml``) or on
    (name, image, labels) ``samples`` (e.g. corrected layers): the one place that picks the family.

    ``task``: "segment" (masks) or "detect" (a box detector, ``finetune_detect_iter``). ``arch``: "yolo",
    "maskrcnn" or "auto" (that of ``model``). A Mask R-CNN run continues from
    ``model`` when it is a Mask R-CNN checkpoint, else starts a new one-class ResNet-50-FPN.
    """
    import shutil
    import tempfile

    from ..core.datasets import export_dataset, read_yolo_dataset

    if (data_yaml is None) == (samples is None):
        raise ValueError("give a dataset (data.yaml) or samples to train on, not both")
    if task == "detect":  # a box detector on a box dataset
        if data_yaml is None:
            raise ValueError("a box detector trains on a box dataset (data.yaml), not on label layers")
        return (yield from finetune_detect_iter(model, data_yaml, out, epochs=epochs, batch=batch or 8, imgsz=imgsz,
                                                zoom=zoom, device=device))
    arch = finetune_architecture(model, arch)
    if arch == "maskrcnn":
        from ..maskrcnn.train import maskrcnn_finetune_iter

        base = model if model and finetune_architecture(model) == "maskrcnn" else None  # else: a new one
        size = {"min_size": imgsz, "max_size": round(imgsz * 1333 / 800)} if imgsz else {}
        extra = {"val_fraction": val_fraction}
        if samples is not None:
            samples = list(samples)
        elif Path(data_yaml).suffix.lower() == ".json":  # a COCO dataset (Sartorius, LIVECell): classes kept
            samples, extra = _coco_samples(Path(data_yaml), val_fraction)
        elif Path(data_yaml).is_dir():  # images/ + labels/ (instance label images)
            from ..core.datasets import read_label_folders

            samples = list(read_label_folders(data_yaml))
        else:
            samples = list(read_yolo_dataset(data_yaml))
        return (yield from maskrcnn_finetune_iter(samples, out, base=base, epochs=epochs, batch=batch or 2,
                                                  device=device, backbone_weights=backbone_weights, **size, **extra))
    workdir = Path(tempfile.mkdtemp(prefix="napari-cellseg-train-"))
    try:
        if data_yaml is None:
            yield Progress(0, 1, 0, epochs, "exporting the training images", unit="epoch")
            data_yaml = export_dataset(list(samples), workdir / "dataset", "yolo", val_fraction)
        return (yield from finetune_iter(model, data_yaml, out, epochs=epochs, batch=batch or 8, imgsz=imgsz,
                                         zoom=zoom, device=device, workdir=workdir))
    finally:  # the exported dataset and ultralytics' run folder; the model is in ``out``
        shutil.rmtree(workdir, ignore_errors=True)


def finetune_iter(
    model: str | Path, data_yaml: str | Path, out: str | Path, *, epochs: int = 10, batch: int = 8,
    imgsz: int | None = None, zoom: float | None = None, device: str = "cpu", workdir: str | Path | None = None,
    calibrate_conf: bool = True, calibrate_tta: bool = True, **train_args,
) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune a YOLO segmentation model on a YOLO dataset (``yolo.train.train_segment_iter``); yields
    progress per batch and epoch.

    ``calibrate_conf``: afterwards, choose the score threshold on the validation images;
    ``calibrate_tta``: choose one for test-time augmented runs too (4 times as long again).

    ``zoom`` (network pixels per image pixel; default: the base model's) sets the scale the
    new images are seen at: pick it so the new cells appear about as large as the objects the
    base model knows (e.g. 0.5 for 60-pixel cells with a nuclei model trained at 1.5).
    """
    from ..backends import load_model, resolve_model

    base = load_model(model, device="cpu")  # checks it is a segmentation checkpoint; gives imgsz and zoom
    _, base_path = resolve_model(model)
    trained = yield from yolo_train.train_segment_iter(base_path, base.info, data_yaml, out, epochs=epochs,
                                                       batch=batch, imgsz=imgsz, zoom=zoom, device=device,
                                                       workdir=workdir, **train_args)
    calibrations = (None, None)
    if calibrate_conf and trained.path is not None and not trained.cancelled:
        calibrations = yield from _calibrate(trained.path, Path(data_yaml), trained.batches_done,
                                             epochs * trained.batches_per_epoch, epochs, with_tta=calibrate_tta)
    return FinetuneResult(trained.path, len(trained.history), trained.cancelled, trained.history, *calibrations)


def _calibrate(path: Path, data_yaml: Path, done: int, total: int, epochs: int, with_tta: bool):
    """Calibrate the packaged model's score threshold on the dataset's validation images (full
    images, not tiles), where it has validation images of its own, and with ``with_tta`` a second
    one for test-time augmented runs. Returns (plain, TTA) calibrations, None where not made."""
    import yaml

    from ..backends import load_model
    from ..core.datasets import read_yolo_dataset

    config = yaml.safe_load(data_yaml.read_text())
    if not config.get("val") or config.get("val") == config.get("train"):
        return None, None
    samples = list(read_yolo_dataset(data_yaml, splits=("val",)))
    if not samples:
        return None, None
    model = load_model(path, device="cpu")  # read once for both calibrations
    calibrations = []
    for tta in (False, True) if with_tta else (False,):
        gen = calibrate_conf_iter(model, samples, tta=tta)
        what = "the score threshold for test-time augmentation" if tta else "the score threshold"
        while True:
            try:
                k, n = next(gen)
            except StopIteration as stop:
                calibrations.append(stop.value)
                break
            yield Progress(done, total, epochs, epochs, f"calibrating {what}: image {k}/{n}", unit="epoch")
    store_calibration(path, *calibrations)
    return calibrations[0], calibrations[1] if with_tta else None


def finetune_detect_iter(
    model, data_yaml: str | Path, out: str | Path, *, epochs: int = 10, batch: int = 8, imgsz: int | None = None,
    zoom: float | None = None, device: str = "cpu", workdir: str | Path | None = None, calibrate_conf: bool = True,
    **train_args,
) -> Generator[Progress, None, FinetuneResult]:
    """Train a box detector with ultralytics (``yolo.train.train_detect_iter``) on a detection dataset: a
    ``data.yaml`` of a YOLO dataset or of a Roboflow "YOLO" export as downloaded (``../train/images`` paths,
    ``valid``, optional ``test``); box or polygon labels. Progress per batch and epoch; closing the generator
    stops at the next batch, keeping the best weights.

    ``model``: see ``yolo.train.detector_start``. ``imgsz``: default the longest side of the training images
    rounded up to the stride, so small nuclei are learnt at full resolution (not resized); the checkpoint records
    the zoom (``imgsz`` / that side), which tiled inference then keeps. ``zoom``: instead, the train and val
    images are cut into tiles of ``imgsz / zoom`` pixels (``yolo.train.tile_box_dataset``; ``imgsz`` default
    640), so images of mixed sizes are all learnt at that one scale, e.g. 1.5 for the small nuclei of DSB2018
    as the shipped 'nuclei' model sees them; the calibration still scores the whole images. ``calibrate_conf``: afterwards the
    validation images are scored (``evaluate_detector_iter``) and the best-F1 confidence is stored as the model's
    own threshold; a ``test`` split, where there is one, is scored at that threshold (``calibration["test"]``).
    """
    from ..backends import load_model, probe_backend, resolve_model
    from .detect import evaluate_detector_iter
    from .segment import run

    data_yaml, splits, side, imgsz = yolo_train.detection_geometry(data_yaml, imgsz or (640 if zoom else None))
    scratch = str(model).endswith((".yaml", ".yml"))  # an ultralytics model file: nothing to resolve
    path, backend = (None, None) if scratch else (resolve_model(model)[1], probe_backend(model))
    start = yolo_train.detector_start(model, path, backend)
    train_yaml = data_yaml
    own_tiles = None
    if zoom is not None:
        import tempfile

        if zoom <= 0:
            raise ValueError(f"zoom must be positive, got {zoom}")
        side = int(round(imgsz / zoom))
        own_tiles = None if workdir else Path(tempfile.mkdtemp(prefix="napari-cellseg-detect-tiles-"))
        yield Progress(0, 1, 0, epochs, f"cutting the training images into {side}-pixel tiles", unit="epoch")
        train_yaml = yolo_train.tile_box_dataset(data_yaml, side, Path(workdir or own_tiles) / "tiles")
    try:
        trained = yield from yolo_train.train_detect_iter(start, train_yaml, out, side=side, imgsz=imgsz,
                                                          epochs=epochs, batch=batch, device=device, workdir=workdir,
                                                          **train_args)
    finally:
        if own_tiles is not None:
            import shutil

            shutil.rmtree(own_tiles, ignore_errors=True)
    path, done, n_batches = trained.path, trained.batches_done, trained.batches_per_epoch
    calibration = None
    if calibrate_conf and path is not None and not trained.cancelled and "val" in splits:
        detector = load_model(path, device="cpu")
        yield Progress(done, epochs * n_batches, epochs, epochs, "choosing the best-F1 confidence", unit="epoch")
        val = run(evaluate_detector_iter(detector, data_yaml, split="val"))
        calibration = {"conf": round(val.best_f1_conf, 3), "objective": "best F1 at IoU 0.5 on the val split",
                       "val": val.summary()}
        if "test" in splits and splits["test"] != splits["val"]:
            yield Progress(done, epochs * n_batches, epochs, epochs, "scoring the test split", unit="epoch")
            calibration["test"] = run(evaluate_detector_iter(detector, data_yaml, split="test",
                                                             conf=calibration["conf"])).summary()
        store_calibration(path, calibration)
    return FinetuneResult(path, len(trained.history), trained.cancelled, trained.history, calibration)
