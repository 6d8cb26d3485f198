"""Training YOLO models with ultralytics: segmentation fine-tuning and box detectors, as generators.

Ultralytics' trainer runs in a helper thread; its callbacks feed a queue that the generator turns into
progress (per batch, with losses and validation metrics per epoch). Closing the generator (Cancel)
stops training at the next batch; the best weights saved so far are kept. The best weights are
packaged with the plugin's metadata (``ckpt["napari_cellseg"]``: the training zoom, the lineage, the
history), so the model is run at the scale it was trained at. Choosing a score threshold needs the
segmentation pipeline and is done above this layer (``pipeline.finetune``); ``store_calibration``
writes the chosen one into the checkpoint.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.heap import settle_heap
from ..core.progress import Progress, TrainingCancelled


@dataclass
class TrainRun:
    """What a YOLO training run returns: the packaged checkpoint (None if none was saved), the per-epoch
    history, and where its progress stopped (for the progress of whatever follows, e.g. a calibration)."""
    path: Path | None
    history: list[dict] = field(default_factory=list)
    batches_done: int = 0
    batches_per_epoch: int = 1
    cancelled: bool = False


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


MIN_BOX_SIDE = 2  # pixels: a box cut by a tile border to a thinner sliver is dropped from that tile


def tile_box_dataset(data_yaml: Path, tile: int, out_dir: Path, splits=("train", "val")) -> Path:
    """Cut the images of a detection dataset's ``splits`` into tiles of ``tile`` pixels (neighbours overlapping
    by a quarter tile, ``core.tiling.tile_grid``), written as a YOLO box dataset; returns its ``data.yaml``.

    A box is clipped to each tile it reaches and kept where at least ``MIN_BOX_SIDE`` pixels of it remain on
    both axes. An image (or its last row or column) smaller than a tile is padded with zeros to the full tile,
    so every object is trained at the same scale (ultralytics resizes each training image to imgsz)."""
    import numpy as np
    import yaml

    from ..core.datasets import read_yolo_detection_dataset, write_yolo_box_dataset
    from ..core.tiling import tile_grid

    names = yaml.safe_load(Path(data_yaml).read_text()).get("names", {0: "cell"})
    class_names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    split_of = {}

    def tiles():
        for split in splits:
            try:
                items = read_yolo_detection_dataset(data_yaml, (split,))
                first = next(items)
            except StopIteration:
                continue
            except ValueError:  # the split is not named (e.g. val = train in some exports): not tiled
                continue
            for name, image, boxes, classes in (first, *items):
                image = np.asarray(image)
                for k, t in enumerate(tile_grid(*image.shape[:2], tile, tile // 4)):
                    block = image[t.slices]
                    pad = [(0, tile - block.shape[0]), (0, tile - block.shape[1])] + [(0, 0)] * (block.ndim - 2)
                    block = np.pad(block, pad)
                    clipped = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4) - [t.x0, t.y0, t.x0, t.y0], 0,
                                      [t.x1 - t.x0, t.y1 - t.y0, t.x1 - t.x0, t.y1 - t.y0])
                    keep = ((clipped[:, 2] - clipped[:, 0]) >= MIN_BOX_SIDE) & \
                        ((clipped[:, 3] - clipped[:, 1]) >= MIN_BOX_SIDE)
                    tile_name = f"{split}_{name}_{k:03d}"
                    split_of[tile_name] = split
                    yield tile_name, block, clipped[keep], np.asarray(classes, np.int64)[keep]

    return write_yolo_box_dataset(tiles(), out_dir, split_of=split_of, class_names=class_names)


def train_segment_iter(
    base_path: str | Path, base_info, data_yaml: str | Path, out: str | Path, *, epochs: int = 10, batch: int = 8,
    imgsz: int | None = None, zoom: float | None = None, device: str = "cpu", workdir: str | Path | None = None,
    **train_args,
) -> Generator[Progress, None, TrainRun]:
    """Fine-tune the YOLO segmentation checkpoint ``base_path`` (its ``ModelInfo``: ``base_info``) on a YOLO
    dataset, cut into tiles that show the images at ``zoom`` (default: the base model's) to a network of
    ``imgsz`` (default: the base model's training size); package the best weights to ``out``.

    ``workdir`` holds the tiles and ultralytics' run folder: a given one is the caller's, a temporary one is
    removed at the end.
    """
    import shutil
    import tempfile

    from ultralytics import YOLO

    settle_heap(collect=False)  # ultralytics' own collections (during and after training) skip the imports

    imgsz = int(imgsz or base_info.train_imgsz or 640)
    zoom = float(zoom or base_info.zoom)
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}")
    tile = int(round(imgsz / zoom))
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="napari-cellseg-finetune-"))
    try:
        data = tile_dataset(Path(data_yaml), tile, workdir / "tiles")

        yolo = YOLO(str(base_path))
        # one optimiser step per batch: ultralytics otherwise accumulates gradients up to 64 images
        # (nbs), which on a few corrected images is fewer steps than epochs
        train_args.setdefault("nbs", batch)
        history, done, n_batches, cancelled = yield from ultralytics_training(
            yolo, dict(data=str(data), epochs=epochs, batch=batch, imgsz=imgsz, device=device, workers=0,
                       plots=False, project=str(workdir), name="run", exist_ok=True, verbose=False, amp=False,
                       **train_args),
            epochs, on_cancel=lambda history: keep_best(workdir, Path(out), base_info, history, zoom))
        path = keep_best(workdir, Path(out), base_info, history, zoom)
        return TrainRun(path, history, done, n_batches, cancelled)
    finally:
        if own_workdir:  # tiles and ultralytics' run folder: tens of MB per run
            shutil.rmtree(workdir, ignore_errors=True)


def ultralytics_training(yolo, train_kwargs: dict, epochs: int, on_cancel):
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


def _best_weights(workdir: Path) -> Path | None:
    """The best weights ultralytics saved so far (last.pt before the first validation), or None."""
    weights_dir = workdir / "run" / "weights"
    return next((p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.is_file()), None)


def keep_best(workdir: Path, out: Path, base_info, history: list[dict], zoom: float) -> Path | None:
    """Package the best segmentation weights saved so far to ``out`` (``package``); None if none yet."""
    best = _best_weights(workdir)
    if best is None:
        return None
    package(best, out, base_info, history, zoom)
    return out


def package(weights: Path, out: Path, base_info, history: list[dict], zoom: float) -> None:
    """Strip the optimizer, record the training zoom, carry the base model's mask erosion (same
    ultralytics rasterisation, same inflation; its mask threshold belongs to its own data and is not
    carried) and note the lineage; written atomically."""
    _write_checkpoint(weights, out, {"zoom": zoom, "mask_erosion": base_info.mask_erosion,
                                     "fine_tuned_from": base_info.path,
                                     "fine_tuned_from_sha256": base_info.sha256, "history": history})


def keep_best_detector(workdir: Path, out: Path, extra: dict) -> Path | None:
    """Package the best detection weights saved so far to ``out`` with ``extra`` as the plugin's metadata."""
    best = _best_weights(workdir)
    if best is None:
        return None
    _write_checkpoint(best, out, dict(extra))
    return out


def _write_checkpoint(weights: Path, out: Path, metadata: dict) -> None:
    import torch
    from ultralytics.utils.torch_utils import strip_optimizer

    from ..core.io import atomic_path

    with atomic_path(out) as tmp:
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        ckpt["napari_cellseg"] = metadata
        torch.save(ckpt, tmp)
        strip_optimizer(str(tmp))


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


def detection_geometry(data_yaml: str | Path, imgsz: int | None = None) -> tuple[Path, dict, int, int]:
    """(the data.yaml, its split folders, the first training image's longest side, the network size) of a
    detection dataset: ``imgsz`` default that side rounded up to the stride, so small nuclei are learnt at full
    resolution (not resized). A missing folder, or an empty or unlabelled training split, fails here, naming it."""
    from ..core.datasets import dataset_split_dirs, read_yolo_detection_dataset

    data_yaml = Path(data_yaml)
    data_yaml = data_yaml / "data.yaml" if data_yaml.is_dir() else data_yaml
    splits = dataset_split_dirs(data_yaml)  # a missing folder fails here, naming it
    first = next(read_yolo_detection_dataset(data_yaml, ("train",)))  # an empty or unlabelled one too
    side = max(first[1].shape[:2])
    return data_yaml, splits, side, int(imgsz or -(-side // 32) * 32)


def detector_start(model, path: Path | None = None, backend: str | None = None) -> tuple[str, str | None, str]:
    """(what ``YOLO()`` opens, weights to load into it or None, a description) for ``train_detect_iter``: a
    detection checkpoint itself; for a segmentation checkpoint (e.g. the shipped 'nuclei') the detection
    architecture of the same size with the segmentation model's matching weights (backbone and neck)
    transferred; an ultralytics model file (``yolo11n.yaml``) as it is (from scratch). ``path`` and
    ``backend``: the checkpoint ``model`` names and the backend the registry finds for it (``yolo-detect`` or
    ``yolo``); not needed for a model file."""
    text = str(model)
    if text.endswith((".yaml", ".yml")):
        return text, None, f"{Path(text).name} from scratch"
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


def train_detect_iter(
    start: tuple[str, str | None, str], data_yaml: Path, out: str | Path, *, side: int, imgsz: int,
    epochs: int = 10, batch: int = 8, device: str = "cpu", workdir: str | Path | None = None, **train_args,
) -> Generator[Progress, None, TrainRun]:
    """Train a box detector with ultralytics from ``start`` (``detector_start``) on a detection dataset
    (``detection_geometry`` gives ``data_yaml``, ``side`` and ``imgsz``); the checkpoint records the zoom
    (``imgsz`` / ``side``), which tiled inference then keeps, and where it was trained from."""
    import shutil
    import tempfile

    from ultralytics import YOLO

    opened, weights, description = start
    zoom = imgsz / side
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
        lineage = {"zoom": zoom, "trained_from": description, "train_image_side": side}

        def keep(history):
            return keep_best_detector(workdir, Path(out), {**lineage, "history": history})

        history, done, n_batches, cancelled = yield from ultralytics_training(yolo, kwargs, epochs, on_cancel=keep)
        return TrainRun(keep(history), history, done, n_batches, cancelled)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
