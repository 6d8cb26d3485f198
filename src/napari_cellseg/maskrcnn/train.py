"""Fine-tuning a Mask R-CNN (the Sartorius workflow) on image/label pairs, as a generator (same protocol as YOLO's).

Samples are (name, image, instance labels) or (name, image, labels, {label: class index}) (a COCO
JSON dataset, :func:`..core.datasets.read_coco_dataset` with ``with_classes``: several classes),
2-D or stacks, normalised to 8 bits exactly as at inference; the targets (boxes, classes, masks) are
built on the fly. A validation split (``val_samples``, or a seeded ``val_fraction`` of the images) is
scored in eval mode after every epoch with pycocotools' COCOeval (``segm``): mask mAP50 and
mAP50-95 go into the progress metrics and the history. The best epoch by validation mask mAP50-95
(by training loss without a validation split) is written to ``out``, the last epoch beside it as
``<stem>_last<suffix>``. Both are in detectron2's layout (``backbone.bottom_up.res2..5``, background
last, ``model`` key) with a ``config.yaml`` beside them, so detectron2's ``DetectionCheckpointer``
loads them back; the plugin's own settings and the history ride along under ``napari_cellseg``.
Closing the generator (Cancel) stops at the next iteration; what was written stays.
"""
from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np

from ..core.progress import Progress
from ..core.result import FinetuneResult

NO_BACKBONE_NOTE = "no local backbone weights: training from scratch"


def _targets(labels: np.ndarray, classes: dict | None = None):
    import torch

    ids = np.unique(labels[labels > 0])
    masks = np.stack([labels == i for i in ids]) if ids.size else np.zeros((0, *labels.shape), bool)
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    classes = classes or {}
    return {"boxes": torch.tensor(np.array(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.tensor([int(classes.get(int(i), 0)) + 1 for i in ids], dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def prepare_samples(samples) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """(uint8 RGB frame, labels, {label: class index}) from (name, image, labels[, classes]) samples;
    frames without objects are dropped."""
    out = _frames(samples)
    if not out:
        raise ValueError("no training frames with labelled objects")
    return [f[1:] for f in out]


def _frames(samples) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    from ..core.datasets import frames_of
    from ..core.normalize import model_rgb, to_stack_of_frames

    out = []
    for sample in samples:
        name, image, labels = sample[:3]
        classes = dict(sample[3]) if len(sample) > 3 and sample[3] is not None else {}
        for frame_name, frame, frame_labels in frames_of(name, np.asarray(image), np.asarray(labels)):
            stacked, _ = to_stack_of_frames(frame)
            rgb = model_rgb(np.asarray(stacked))
            if frame_labels.max() > 0:
                out.append((frame_name, rgb, frame_labels.astype(np.int32), classes))
    return out


def last_path(out: str | Path) -> Path:
    """Where the last epoch is written beside the best one: ``<stem>_last<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_last{out.suffix}")


def _tensor_of(rgb: np.ndarray, bgr: bool, device):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1] if bgr else rgb)).permute(2, 0, 1)
    return x.float().div(255).to(device)


def evaluate_masks(model, frames, num_classes: int, *, bgr: bool, device="cpu") -> dict:
    """Mask mAP50 and mAP50-95 (pycocotools COCOeval, ``segm``) of ``model`` in eval mode on
    (rgb, labels, classes) frames."""
    import torch

    from ..core.metrics import coco_segm_stats

    truths, predictions = [], []
    was_training = model.training
    model.eval()
    try:
        for rgb, labels, classes in frames:
            truths.append([(labels == label, classes.get(int(label), 0)) for label in np.unique(labels[labels > 0])])
            with torch.no_grad():
                pred = model([_tensor_of(rgb, bgr, device)])[0]
            masks = (pred["masks"][:, 0] > 0.5).cpu().numpy()
            # torchvision's labels count background as 0
            predictions.append(list(zip(masks, [c - 1 for c in pred["labels"].tolist()], pred["scores"].tolist())))
    finally:
        model.train(was_training)
    if not any(predictions):
        return {"val/mask_mAP50": 0.0, "val/mask_mAP50-95": 0.0}
    stats = coco_segm_stats([labels.shape for _, labels, _ in frames], truths, predictions, num_classes=num_classes)
    map5095, map50 = (max(0.0, float(v)) for v in stats[:2])
    return {"val/mask_mAP50": round(map50, 4), "val/mask_mAP50-95": round(map5095, 4)}


def _replace_heads(model, num_classes: int) -> None:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    box = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features, num_classes + 1)
    mask = model.roi_heads.mask_predictor
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask.conv5_mask.in_channels, mask.conv5_mask.out_channels,
                                                       num_classes + 1)


def maskrcnn_finetune_iter(
    samples, out: str | Path, *, base: str | Path | None = None, epochs: int = 10, batch: int = 2,
    lr: float = 0.002, device: str = "cpu", backbone_weights: str | Path | None = None,
    min_size: int | None = None, max_size: int | None = None, seed: int = 0,
    val_samples=None, val_fraction: float = 0.0, class_names=None,
) -> Generator[Progress, None, FinetuneResult]:
    """Train from ``base`` (a Mask R-CNN checkpoint) or from a new ResNet-50-FPN with
    ``len(class_names)`` classes (default: the classes the samples use, one 'cell' without any).

    With a ``base`` of another class count, its box and mask predictors are replaced (new heads for
    these classes). ``min_size``/``max_size``: the shortest-edge size (default: the base's, or 800/1333).
    """
    import torch

    from ..core.datasets import split_names
    from .backend import build_model, checkpoint_to_torchvision
    from .convert import MaskRCNNConfig, load_weights_strict, read_config_yaml

    torch.manual_seed(seed)
    frames = _frames(samples)
    if not frames:
        raise ValueError("no training frames with labelled objects")
    if val_samples is not None:
        val_frames = [f[1:] for f in _frames(val_samples)]
    elif val_fraction and len(frames) > 1:
        held = set(split_names([f[0] for f in frames], val_fraction, seed))
        val_frames = [f[1:] for f in frames if f[0] in held]
        frames = [f for f in frames if f[0] not in held]
    else:
        val_frames = []
    frames = [f[1:] for f in frames]
    used = max((c for _, _, classes in frames for c in classes.values()), default=0) + 1
    if class_names is None:
        class_names = ["cell"] if used == 1 else [f"class {i}" for i in range(used)]
    class_names = [str(n) for n in class_names]
    if used > len(class_names):
        raise ValueError(f"the samples use {used} classes, but {len(class_names)} class names were given")
    notes = []
    base_cfg = None
    if base is not None:
        state, unmapped, config = checkpoint_to_torchvision(Path(base))
        model = build_model(config, trainable_layers=3)
        load_weights_strict(model, state, unmapped, base)
        if config.num_classes != len(class_names):
            notes.append(f"{Path(base).name} has {config.num_classes} classes, the data {len(class_names)}: "
                         "new box and mask predictors")
            _replace_heads(model, len(class_names))
            config.num_classes = len(class_names)
        base_yaml = Path(base).parent / "config.yaml"
        if config.source == "detectron2" and base_yaml.is_file():
            base_cfg = read_config_yaml(base_yaml)
    else:
        config = MaskRCNNConfig.torchvision_default(len(class_names))
        config.min_size_test, config.max_size_test = 800, 1333
        model = build_model(config, trainable_layers=5)
        if backbone_weights is not None:
            weights = torch.load(backbone_weights, map_location="cpu", weights_only=True)
            weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
            missing, _ = model.backbone.body.load_state_dict(weights, strict=False)
            if missing:
                raise ValueError(f"{backbone_weights}: not ResNet-50 ImageNet weights (missing {missing[:3]})")
            notes.append(f"backbone initialised from {Path(backbone_weights).name}")
        else:
            notes.append(NO_BACKBONE_NOTE)
    if min_size:
        config.min_size_test = int(min_size)
        config.max_size_test = int(max_size or round(min_size * 1333 / 800))
    config.class_names = dict(enumerate(class_names))
    config.notes = [*config.notes, *notes]
    config.input_range = "percentiles"  # _frames stretches every frame (normalize.model_rgb)
    model.transform.min_size, model.transform.max_size = (config.min_size_test,), config.max_size_test
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    bgr = config.input_format.upper() == "BGR"
    rng = np.random.default_rng(seed)
    per_epoch = -(-len(frames) // batch)
    total = epochs * per_epoch
    history: list[dict] = []
    best = None
    done = 0
    out = Path(out)
    what = f"{len(frames)} training, {len(val_frames)} validation frames; classes {', '.join(class_names)}"
    yield Progress(0, total, 0, epochs, notes[0] if notes else f"training: {what}", unit="epoch")
    for epoch in range(epochs):
        order = rng.permutation(len(frames))
        losses = []
        for start in range(0, len(order), batch):
            images, targets = [], []
            for index in order[start:start + batch]:
                rgb, labels, classes = frames[index]
                if rng.random() < 0.5:  # flips: the same augmentation as test time
                    rgb, labels = rgb[:, ::-1], labels[:, ::-1]
                images.append(_tensor_of(rgb, bgr, device))
                targets.append({k: v.to(device) for k, v in _targets(np.ascontiguousarray(labels), classes).items()})
            loss_parts = model(images, targets)
            loss = sum(loss_parts.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss diverged at epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)  # random heads give huge early gradients
            optimizer.step()
            losses.append(float(loss.detach()))
            done += 1
            yield Progress(done, total, epoch, epochs, f"epoch {epoch + 1}/{epochs}, loss {losses[-1]:.3f}",
                           unit="epoch")
        mean_loss = round(float(np.mean(losses)), 4)
        entry = {"epoch": epoch + 1, "train/loss": mean_loss}
        metrics = {}
        if val_frames:
            yield Progress(done, total, epoch, epochs, f"epoch {epoch + 1}/{epochs}: validating", unit="epoch")
            metrics = evaluate_masks(model, val_frames, len(class_names), bgr=bgr, device=device)
            entry.update(metrics)
            score = metrics["val/mask_mAP50-95"]
            improved = best is None or score > best
        else:
            score = mean_loss
            improved = best is None or score < best
        history.append(entry)
        if improved:
            best = score
            entry["best"] = True
        _save(model, config, history, last_path(out), base, base_cfg)
        if improved:
            _save(model, config, history, out, base, base_cfg)
        metrics = {**metrics, ("best/mask_mAP50-95" if val_frames else "best/loss"): round(best, 4)}
        yield Progress(done, total, epoch + 1, epochs, f"epoch {epoch + 1}/{epochs} done",
                       {"losses": {"train/loss": mean_loss}, "metrics": metrics}, unit="epoch")
    return FinetuneResult(out if out.is_file() else None, len(history), False, history)


def _save(model, config, history, out: Path, base, base_cfg=None) -> None:
    """``out`` in detectron2's layout (``{'model': state}``, its names, background last) and the
    detectron2 ``config.yaml`` beside it; the plugin's settings and history under ``napari_cellseg``."""
    import torch
    import yaml

    from ..core.io import atomic_path
    from .convert import detectron2_config_dict, torchvision_to_detectron2_state

    state = torchvision_to_detectron2_state(model.state_dict(), config.num_classes)
    with atomic_path(out) as tmp:
        torch.save({"model": state,
                    "napari_cellseg": {"maskrcnn_config": config.to_dict(), "history": list(history),
                                       "fine_tuned_from": str(base) if base else None}}, tmp)
    cfg = detectron2_config_dict(config, base_cfg)
    with atomic_path(out.parent / "config.yaml") as tmp:
        Path(tmp).write_text(yaml.safe_dump(cfg, sort_keys=True))
