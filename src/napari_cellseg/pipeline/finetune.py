"""Fine-tuning a YOLO segmentation model on a corrected dataset, as a generator.

Ultralytics' trainer runs in a helper thread; its callbacks feed a queue that the
generator turns into progress (per batch, with losses and validation metrics per
epoch). Closing the generator (Cancel) stops training at the next batch; the best
weights saved so far are kept. The result carries its training zoom, so it is
run at the scale it was trained at, and with a score threshold calibrated on the dataset's
validation images (the threshold with the best mean F1 at IoU 0.5), stored in the checkpoint as
the model's own; a second one is calibrated for test-time augmented runs, whose fused scores
differ. (Mask R-CNN: :mod:`.finetune_maskrcnn`.)
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Generator
from pathlib import Path

from ..core.heap import settle_heap
from ..core.progress import Progress, TrainingCancelled
from ..core.result import FinetuneResult


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


def store_calibration(path: str | Path, *calibrations: dict) -> None:
    """Write the chosen thresholds into a packaged checkpoint (atomically, in one write) as the
    model's own: ``conf``, or ``conf_tta`` for a calibration made with test-time augmentation."""
    import torch

    from ..core.io import atomic_path

    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file, just written
    for calibration in calibrations:
        key = "conf_tta" if calibration.get("tta") else "conf"
        ckpt.setdefault("napari_cellseg", {}).update({key: calibration["conf"], f"{key}_calibration": calibration})
    with atomic_path(Path(path)) as tmp:
        torch.save(ckpt, tmp)


def tile_dataset(data_yaml: Path, tile: int, out_dir: Path) -> Path:
    """Cut every image of a YOLO dataset into tiles of ``tile`` pixels (keeps the train/val split).

    Training then sees objects at the scale the tiled inference uses.
    """
    import yaml

    from ..core.datasets import read_yolo_dataset, write_yolo_dataset
    from ..core.tiling import tile_grid

    config = yaml.safe_load(Path(data_yaml).read_text())
    names = config.get("names", {0: "cell"})
    class_names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    val_dir = str(config.get("val", ""))
    samples, val_names = [], []
    root = Path(config.get("path") or Path(data_yaml).parent)
    val_stems = {p.stem for p in (root / val_dir).glob("*")} if val_dir and val_dir != config.get("train") else set()
    for name, image, labels in read_yolo_dataset(data_yaml):
        for k, t in enumerate(tile_grid(*labels.shape, tile, tile // 8)):
            tile_name = f"{name}_{k:03d}"
            samples.append((tile_name, image[t.slices], labels[t.slices]))
            if name in val_stems:
                val_names.append(tile_name)
    return write_yolo_dataset(samples, out_dir, val_names=val_names, class_names=class_names)


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
                                                device=device))
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
    """Fine-tune a YOLO segmentation model on a YOLO dataset; yields progress per batch and epoch.

    ``calibrate_conf``: afterwards, choose the score threshold on the validation images;
    ``calibrate_tta``: choose one for test-time augmented runs too (4 times as long again).

    ``zoom`` (network pixels per image pixel; default: the base model's) sets the scale the
    new images are seen at: pick it so the new cells appear about as large as the objects the
    base model knows (e.g. 0.5 for 60-pixel cells with a nuclei model trained at 1.5).
    """
    import shutil
    import tempfile

    from ultralytics import YOLO

    settle_heap(collect=False)  # ultralytics' own collections (during and after training) skip the imports

    from ..backends import load_model, resolve_model

    base = load_model(model, device="cpu")  # checks it is a segmentation checkpoint; gives imgsz and zoom
    _, base_path = resolve_model(model)
    imgsz = int(imgsz or base.info.train_imgsz or 640)
    zoom = float(zoom or base.info.zoom)
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}")
    tile = int(round(imgsz / zoom))
    own_workdir = workdir is None  # a temporary one is removed at the end; a given one is the caller's
    workdir = Path(workdir or tempfile.mkdtemp(prefix="napari-cellseg-finetune-"))
    try:
        data = tile_dataset(Path(data_yaml), tile, workdir / "tiles")

        yolo = YOLO(str(base_path))
        # one optimiser step per batch: ultralytics otherwise accumulates gradients up to 64 images
        # (nbs), which on a few corrected images is fewer steps than epochs
        train_args.setdefault("nbs", batch)
        state = yield from _ultralytics_training(
            yolo, dict(data=str(data), epochs=epochs, batch=batch, imgsz=imgsz, device=device, workers=0,
                       plots=False, project=str(workdir), name="run", exist_ok=True, verbose=False, amp=False,
                       **train_args),
            epochs, on_cancel=lambda history: _keep_best(workdir, Path(out), base.info, history, zoom))
        history, done, n_batches, cancelled = state
        result_path = _keep_best(workdir, Path(out), base.info, history, zoom)
        calibrations = (None, None)
        if calibrate_conf and result_path is not None and not cancelled:
            calibrations = yield from _calibrate(result_path, Path(data_yaml), done, epochs * n_batches, epochs,
                                                 with_tta=calibrate_tta)
        return FinetuneResult(result_path, len(history), cancelled, history, *calibrations)
    finally:
        if own_workdir:  # tiles and ultralytics' run folder: tens of MB per run
            shutil.rmtree(workdir, ignore_errors=True)



def _ultralytics_training(yolo, train_kwargs: dict, epochs: int, on_cancel):
    """``yolo.train(**train_kwargs)`` in a helper thread, as progress per batch and epoch (losses and metrics);
    closing the generator stops training at the next batch and calls ``on_cancel(history)`` (keep the best
    weights so far). Returns (history, batches done, batches per epoch, cancelled)."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def on_batch_end(trainer):
        if stop.is_set():
            raise TrainingCancelled()
        events.put(("batch", trainer.epoch, trainer.epochs, len(trainer.train_loader)))

    def on_epoch_end(trainer):
        losses = {k: round(float(v), 4) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()}
        metrics = {k: round(float(v), 4) for k, v in (trainer.metrics or {}).items()}
        # the final re-validation of the best weights arrives with epoch == epochs (+1 in some versions)
        events.put(("epoch", min(trainer.epoch + 1, trainer.epochs), trainer.epochs, losses, metrics))

    yolo.add_callback("on_train_batch_end", on_batch_end)
    # the trainer, its data and model are built by now: frozen too, so that the collections
    # ultralytics asks for during and after the epochs walk only what each epoch makes
    yolo.add_callback("on_train_start", lambda _trainer: settle_heap(collect=False))
    yolo.add_callback("on_fit_epoch_end", on_epoch_end)

    def train():
        try:
            yolo.train(**train_kwargs)
            events.put(("finished",))
        except TrainingCancelled:
            events.put(("cancelled",))
        except Exception as exc:  # handed to the consumer, raised there
            events.put(("error", exc))

    thread = threading.Thread(target=train, name="napari-cellseg-finetune", daemon=True)
    history: list[dict] = []
    done, n_batches, cancelled = 0, 1, False
    thread.start()
    try:
        yield Progress(0, epochs, 0, epochs, "preparing", unit="epoch")
        while True:
            event = events.get()
            if event[0] == "batch":
                _, epoch, total_epochs, n_batches = event
                done += 1
                yield Progress(done, total_epochs * n_batches, epoch, total_epochs,
                               f"epoch {epoch + 1}/{total_epochs}", unit="epoch")
            elif event[0] == "epoch":
                _, epoch, total_epochs, losses, metrics = event
                if history and history[-1]["epoch"] == epoch:
                    history.pop()  # ultralytics re-validates the best weights at the end: keep the latest
                history.append({"epoch": epoch, **losses, **metrics})
                yield Progress(done, total_epochs * n_batches, epoch, total_epochs, f"epoch {epoch}/{total_epochs} done",
                               {"losses": losses, "metrics": metrics}, unit="epoch")
            elif event[0] == "error":
                raise event[1]
            else:
                cancelled = event[0] == "cancelled"
                break
    except GeneratorExit:  # cancelled by the consumer: stop at the next batch, keep the best so far
        stop.set()
        thread.join()
        on_cancel(history)
        raise
    finally:
        stop.set()
        thread.join()
    return history, done, n_batches, cancelled


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


def _keep_best(workdir: Path, out: Path, base_info, history: list[dict], zoom: float) -> Path | None:
    """Package the best weights saved so far (last.pt before the first validation) to ``out``."""
    weights_dir = workdir / "run" / "weights"
    best = next((p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.is_file()), None)
    if best is None:
        return None
    _package(best, out, base_info, history, zoom)
    return out


def _package(weights: Path, out: Path, base_info, history: list[dict], zoom: float) -> None:
    """Strip the optimizer, record the training zoom, carry the base model's mask erosion (same
    ultralytics rasterisation, same inflation; its mask threshold belongs to its own data and is not
    carried) and note the lineage; written atomically."""
    import torch
    from ultralytics.utils.torch_utils import strip_optimizer

    from ..core.io import atomic_path

    with atomic_path(out) as tmp:
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        ckpt["napari_cellseg"] = {"zoom": zoom, "mask_erosion": base_info.mask_erosion,
                                  "fine_tuned_from": base_info.path,
                                  "fine_tuned_from_sha256": base_info.sha256, "history": history}
        torch.save(ckpt, tmp)
        strip_optimizer(str(tmp))


def detector_start(model) -> tuple[str, str | None, str]:
    """(what ``YOLO()`` opens, weights to load into it or None, a description) for ``finetune_detect_iter``: a
    detection checkpoint itself; for a segmentation checkpoint (e.g. the shipped 'nuclei') the detection
    architecture of the same size with the segmentation model's matching weights (backbone and neck)
    transferred; an ultralytics model file (``yolo11n.yaml``) as it is (from scratch)."""
    text = str(model)
    if text.endswith((".yaml", ".yml")):
        return text, None, f"{Path(text).name} from scratch"
    from ..backends import probe_backend, resolve_model

    _, path = resolve_model(model)
    backend = probe_backend(model)
    if backend == "yolo-detect":
        return str(path), None, f"fine-tuned from {path.name}"
    if backend == "yolo":
        import torch

        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the user's (or the shipped) checkpoint
        yaml_file = str(getattr(ckpt.get("model"), "yaml", {}).get("yaml_file", "yolo11n-seg.yaml"))
        arch = Path(yaml_file).name.replace("-seg", "")
        return arch, str(path), f"{arch} with the weights of {path.name} where they fit"
    raise ValueError(f"{model}: a {backend or 'unknown'} model; a detector starts from an ultralytics detection or "
                     "segmentation checkpoint, or a model file such as yolo11n.yaml")


def finetune_detect_iter(
    model, data_yaml: str | Path, out: str | Path, *, epochs: int = 10, batch: int = 8, imgsz: int | None = None,
    device: str = "cpu", workdir: str | Path | None = None, calibrate_conf: bool = True, **train_args,
) -> Generator[Progress, None, FinetuneResult]:
    """Train a box detector with ultralytics on a detection dataset: a ``data.yaml`` of a YOLO dataset or of a
    Roboflow "YOLO" export as downloaded (``../train/images`` paths, ``valid``, optional ``test``); box or polygon
    labels. Progress per batch and epoch; closing the generator stops at the next batch, keeping the best weights.

    ``model``: see ``detector_start``. ``imgsz``: default the longest side of the training images rounded up to
    the stride, so small nuclei are learnt at full resolution (not resized); the checkpoint records the zoom
    (``imgsz`` / that side), which tiled inference then keeps. ``calibrate_conf``: afterwards the validation
    images are scored (``evaluate_detector_iter``) and the best-F1 confidence is stored as the model's own
    threshold; a ``test`` split, where there is one, is scored at that threshold (``calibration["test"]``).
    """
    import shutil
    import tempfile

    from ultralytics import YOLO

    from ..core.datasets import dataset_split_dirs, read_yolo_detection_dataset

    data_yaml = Path(data_yaml)
    data_yaml = data_yaml / "data.yaml" if data_yaml.is_dir() else data_yaml
    splits = dataset_split_dirs(data_yaml)  # a missing folder fails here, naming it
    first = next(read_yolo_detection_dataset(data_yaml, ("train",)))  # an empty or unlabelled one too
    side = max(first[1].shape[:2])
    imgsz = int(imgsz or -(-side // 32) * 32)
    zoom = imgsz / side
    opened, weights, start = detector_start(model)
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="napari-cellseg-detect-"))
    try:
        yolo = YOLO(opened, task="detect")
        if weights:
            yolo.load(weights)
        train_args.setdefault("nbs", batch)
        kwargs = dict(data=str(data_yaml), epochs=epochs, batch=batch, imgsz=imgsz, device=device, workers=0,
                      plots=False, project=str(workdir), name="run", exist_ok=True, verbose=False, amp=False,
                      pretrained=bool(weights) or opened.endswith(".pt"), **train_args)
        lineage = {"zoom": zoom, "trained_from": start, "train_image_side": side}

        def keep(history):
            return _keep_best_detector(workdir, Path(out), {**lineage, "history": history})

        history, done, n_batches, cancelled = yield from _ultralytics_training(yolo, kwargs, epochs, on_cancel=keep)
        path = keep(history)
        calibration = None
        if calibrate_conf and path is not None and not cancelled and "val" in splits:
            from ..backends import load_model
            from .detect import evaluate_detector_iter
            from .segment import run

            trained = load_model(path, device="cpu")
            yield Progress(done, epochs * n_batches, epochs, epochs, "choosing the best-F1 confidence", unit="epoch")
            val = run(evaluate_detector_iter(trained, data_yaml, split="val"))
            calibration = {"conf": round(val.best_f1_conf, 3), "objective": "best F1 at IoU 0.5 on the val split",
                           "val": val.summary()}
            if "test" in splits and splits["test"] != splits["val"]:
                yield Progress(done, epochs * n_batches, epochs, epochs, "scoring the test split", unit="epoch")
                calibration["test"] = run(evaluate_detector_iter(trained, data_yaml, split="test",
                                                                 conf=calibration["conf"])).summary()
            store_calibration(path, calibration)
        return FinetuneResult(path, len(history), cancelled, history, calibration)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _keep_best_detector(workdir: Path, out: Path, extra: dict) -> Path | None:
    import torch
    from ultralytics.utils.torch_utils import strip_optimizer

    from ..core.io import atomic_path

    weights_dir = workdir / "run" / "weights"
    best = next((p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.is_file()), None)
    if best is None:
        return None
    with atomic_path(out) as tmp:
        ckpt = torch.load(best, map_location="cpu", weights_only=False)
        ckpt["napari_cellseg"] = dict(extra)
        torch.save(ckpt, tmp)
        strip_optimizer(str(tmp))
    return out
