"""Fine-tuning a torchvision Mask R-CNN on image/label pairs, as a generator (same protocol as YOLO's).

Samples are (name, image, instance labels), 2-D or stacks, normalised to 8 bits exactly as at
inference; the COCO-style targets (boxes, classes, masks) are built on the fly. Progress is yielded
per iteration, losses per epoch; closing the generator (Cancel) stops at the next iteration and the
best weights so far (lowest epoch loss) stay in ``out``. The checkpoint carries the model settings,
so the Mask R-CNN backend loads it as it was trained.
"""
from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np

from ..core.progress import Progress
from ..core.result import FinetuneResult

NO_BACKBONE_NOTE = "no local backbone weights: training from scratch"


def _targets(labels: np.ndarray):
    import torch

    ids = np.unique(labels[labels > 0])
    masks = np.stack([labels == i for i in ids]) if ids.size else np.zeros((0, *labels.shape), bool)
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return {"boxes": torch.tensor(np.array(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.ones(len(ids), dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def prepare_samples(samples) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 RGB frame, labels) pairs from (name, image, labels) samples; frames without objects are dropped."""
    from ..core.datasets import frames_of
    from ..core.normalize import model_rgb, to_stack_of_frames

    out = []
    for name, image, labels in samples:
        for _, frame, frame_labels in frames_of(name, np.asarray(image), np.asarray(labels)):
            stacked, _ = to_stack_of_frames(frame)
            rgb = model_rgb(np.asarray(stacked))
            if frame_labels.max() > 0:
                out.append((rgb, frame_labels.astype(np.int32)))
    if not out:
        raise ValueError("no training frames with labelled objects")
    return out


def maskrcnn_finetune_iter(
    samples, out: str | Path, *, base: str | Path | None = None, epochs: int = 10, batch: int = 2,
    lr: float = 0.002, device: str = "cpu", backbone_weights: str | Path | None = None,
    min_size: int = 800, max_size: int = 1333, seed: int = 0,
) -> Generator[Progress, None, FinetuneResult]:
    """Train from ``base`` (a Mask R-CNN checkpoint) or from a new one-class ResNet-50-FPN."""
    import torch

    from .convert import MaskRCNNConfig
    from .backend import build_model, checkpoint_to_torchvision

    torch.manual_seed(seed)
    frames = prepare_samples(samples)
    notes = []
    if base is not None:
        state, unmapped, config = checkpoint_to_torchvision(Path(base))
        if config.num_classes != 1:
            raise ValueError(f"{base}: fine-tuning keeps one class ('cell'); the checkpoint has {config.num_classes}")
        model = build_model(config, trainable_layers=3)
        from .convert import load_weights_strict

        load_weights_strict(model, state, unmapped, base)
    else:
        config = MaskRCNNConfig.torchvision_default(1)
        config.min_size_test, config.max_size_test = int(min_size), int(max_size)
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
    config.notes = [*config.notes, *notes]
    config.input_range = "percentiles"  # prepare_samples stretches every frame (normalize.model_rgb)
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
    yield Progress(0, total, 0, epochs, notes[0] if notes else "training", unit="epoch")
    for epoch in range(epochs):
        order = rng.permutation(len(frames))
        losses = []
        for start in range(0, len(order), batch):
            images, targets = [], []
            for index in order[start:start + batch]:
                rgb, labels = frames[index]
                if rng.random() < 0.5:  # flips: the same augmentation as test time
                    rgb, labels = rgb[:, ::-1], labels[:, ::-1]
                x = torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1] if bgr else rgb)).permute(2, 0, 1)
                images.append(x.float().div(255).to(device))
                targets.append({k: v.to(device) for k, v in _targets(np.ascontiguousarray(labels)).items()})
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
        mean_loss = float(np.mean(losses))
        history.append({"epoch": epoch + 1, "train/loss": round(mean_loss, 4)})
        if best is None or mean_loss < best:
            best = mean_loss
            _save(model, config, history, out, base)
        yield Progress(done, total, epoch + 1, epochs, f"epoch {epoch + 1}/{epochs} done",
                       {"losses": {"train/loss": round(mean_loss, 4)}, "metrics": {"best/loss": round(best, 4)}},
                       unit="epoch")
    return FinetuneResult(out if out.is_file() else None, len(history), False, history)


def _save(model, config, history, out: Path, base) -> None:
    import torch

    from ..core.io import atomic_path

    with atomic_path(out) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "napari_cellseg": {"maskrcnn_config": config.to_dict(), "history": list(history),
                                       "fine_tuned_from": str(base) if base else None}}, tmp)
