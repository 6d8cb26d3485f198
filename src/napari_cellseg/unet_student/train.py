"""Training the student U-Net, as a generator.

``train_iter`` yields a :class:`Progress` per batch and one with an epoch ``record``
({epoch, loss, val_dice, lr, seconds[, event]}) at every epoch end; closing the generator
(Cancel) stops after the current batch, keeping the checkpoints written so far.

Checkpoints: ``out`` holds the best weights by validation Dice (foreground Dice on fixed
validation crops); ``<out stem>.last.pt`` beside it holds the last epoch with the optimizer,
epoch and history, for ``resume=True``. Before each validation the BatchNorm statistics are
recomputed at the epoch's final weights on ``bn_batches`` clean training crops.

Collapse: when the validation Dice stays below ``collapse_dice`` for ``collapse_patience``
epochs in a row (counted once the Dice has been above it, or after the first
``collapse_patience`` epochs: a fresh network starts near 0), or a batch's loss is not finite, the weights and optimizer of the last good
epoch are restored, the learning rate is divided by 3, and the event is reported in the
progress message and the history (``event``). After ``max_restarts`` restarts training
goes on without further restarts.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.progress import Progress
from .data import Sample, intensity_jitter, random_crop, to_network, validation_crops
from .model import CHECKPOINT_KEY, DEFAULT_WIDTHS, build_unet, checkpoint_meta, load_checkpoint, save_checkpoint
from .targets import PostProcess, make_targets

DEFAULT_TILE = 768  # inference tile side in image pixels: most images in one tile (the network is fully convolutional)
NORMALISATION = "per-channel 1st-99.8th percentile to uint8 RGB, then /255"


@dataclass
class StudentResult:
    path: Path | None
    best_dice: float
    epochs_done: int
    cancelled: bool
    history: list[dict] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def last_checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".last.pt")


def _loss(logits, targets):
    import torch
    from torch.nn import functional as F

    fg_logit, fg = logits[:, 0], targets[:, 0]
    prob = torch.sigmoid(fg_logit)
    inter = (prob * fg).sum()
    soft_dice = 1 - (2 * inter + 1) / (prob.sum() + fg.sum() + 1)
    bce_fg = F.binary_cross_entropy_with_logits(fg_logit, fg)
    # boundary pixels are rare: weight them up
    bce_boundary = F.binary_cross_entropy_with_logits(
        logits[:, 1], targets[:, 1], pos_weight=torch.tensor(3.0, device=logits.device))
    bce_distance = F.binary_cross_entropy_with_logits(logits[:, 2], targets[:, 2])
    return bce_fg + soft_dice + 0.5 * bce_boundary + bce_distance


def _batch(samples, crop, batch, rng, scale_jitter, with_targets=True, jitter=True):
    import torch

    images, targets = [], []
    for _ in range(batch):
        sample = samples[int(rng.integers(len(samples)))]
        image, labels = random_crop(sample, crop, rng, scale_jitter)
        images.append(intensity_jitter(image, rng) if jitter else to_network(image))
        if with_targets:
            targets.append(make_targets(labels))
    x = torch.from_numpy(np.stack(images))
    return (x, torch.from_numpy(np.stack(targets))) if with_targets else x


def recalibrate_batchnorm(model, batches, device="cpu") -> None:
    """Recompute BatchNorm running statistics as a plain average over ``batches`` at the current weights.

    The running averages kept during training lag behind weights that still move fast; without
    this the network scores far lower in eval mode than on its training batches.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def validation_dice(model, crops, device="cpu", batch: int = 8) -> float:
    """Foreground Dice, pooled over all validation crops."""
    import torch

    if not crops:
        return float("nan")
    model.eval()
    inter = total = 0.0
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            chunk = crops[i:i + batch]
            x = torch.from_numpy(np.stack([to_network(c[0]) for c in chunk])).to(device)
            pred = (model(x)[:, 0] > 0).cpu().numpy()
            truth = np.stack([c[1] > 0 for c in chunk])
            inter += float(np.logical_and(pred, truth).sum())
            total += float(pred.sum() + truth.sum())
    return 2 * inter / total if total else 1.0


def train_iter(
    train: list[Sample],
    val: list[Sample],
    out: str | Path,
    *,
    epochs: int = 30,
    batch: int = 8,
    crop: int = 256,
    lr: float = 2e-3,
    widths=DEFAULT_WIDTHS,
    device: str = "cpu",
    resume: bool = False,
    init: str | Path | None = None,
    steps_per_epoch: int | None = None,
    scale_jitter: float = 0.2,
    seed: int = 0,
    collapse_dice: float = 0.05,
    collapse_patience: int = 3,
    max_restarts: int = 3,
    bn_batches: int = 8,
    postprocess: PostProcess = PostProcess(),
    tile: int = DEFAULT_TILE,
    info: dict | None = None,
    epoch_hook: Callable | None = None,
) -> Generator[Progress, None, StudentResult]:
    """Train (or resume) a student; see the module docstring. ``info``: provenance kept in the checkpoint.

    ``init``: a student checkpoint whose weights start the training (e.g. a distilled student
    fine-tuned on ground truth); its architecture is used, the optimizer and schedule start afresh.

    ``epoch_hook(model, epoch)``, when given, runs after each epoch's batches and before
    validation (used by the tests to provoke a collapse).
    """
    import torch

    from ..core.backend import resolve_device
    from ..core.heap import settle_heap

    settle_heap(collect=False)  # later full collections (in this thread or napari's) skip the imports
    if not train:
        raise ValueError("no training images")
    if crop % 16:
        raise ValueError(f"crop {crop} must be a multiple of 16")
    device = resolve_device(device)
    out = Path(out)
    last_path = last_checkpoint_path(out)
    torch.manual_seed(seed)
    start = None
    if init is not None and not resume:
        start = load_checkpoint(init)
        if CHECKPOINT_KEY not in start:
            raise ValueError(f"{init}: not a U-Net student checkpoint")
        widths = tuple(start[CHECKPOINT_KEY]["widths"])
    model = build_unet(widths).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    history: list[dict] = []
    events: list[str] = []
    if start is not None:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in start["state_dict"].items()})
    start_epoch, lr_factor, best_dice, restarts = 0, 1.0, -1.0, 0
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"{last_path}: no checkpoint to resume from")
        ckpt = load_checkpoint(last_path)
        meta = ckpt[CHECKPOINT_KEY]
        if tuple(meta["widths"]) != tuple(model.widths):
            raise ValueError(f"{last_path}: a U-Net of widths {meta['widths']}, not {list(model.widths)}")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        training = meta.get("training", {})
        start_epoch = int(training.get("epoch", 0))
        lr_factor = float(training.get("lr_factor", 1.0))
        best_dice = float(training.get("best_dice", -1.0))
        restarts = int(training.get("restarts", 0))
        history = list(meta.get("history", []))
    steps = int(steps_per_epoch or max(1, math.ceil(len(train) / batch)))
    val_crops = validation_crops(val, crop)
    good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), start_epoch)
    low_epochs, ever_good = 0, any(r.get('val_dice', 0) >= collapse_dice for r in history)
    done, total = 0, max(0, epochs - start_epoch) * steps
    cancelled = True  # until the loop ends normally

    def meta_now(epoch):
        return checkpoint_meta(model, zoom=1.0, tile=tile, normalisation=NORMALISATION,
                               postprocess=postprocess.as_dict(), history=history, info=info or {},
                               training={"epoch": epoch, "epochs": epochs, "lr": lr, "lr_factor": lr_factor,
                                         "best_dice": best_dice, "restarts": restarts, "batch": batch,
                                         "crop": crop, "n_train": len(train), "n_val": len(val),
                                         "val_names": [s.name for s in val][:2000]})

    yield Progress(0, total, start_epoch, epochs, f"training from epoch {start_epoch + 1}", unit="epoch")
    epoch = start_epoch
    try:
        while epoch < epochs:
            epoch_started = time.perf_counter()
            current_lr = lr * lr_factor * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            rng = np.random.default_rng([seed, epoch, restarts])
            model.train()
            losses, finite = [], True
            for step in range(steps):
                x, y = _batch(train, crop, batch, rng, scale_jitter)
                x, y = x.to(device), y.to(device)
                loss = _loss(model(x), y)
                if not torch.isfinite(loss):
                    finite = False
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                done += 1
                yield Progress(done, total, epoch, epochs,
                               f"epoch {epoch + 1}/{epochs}, batch {step + 1}/{steps}, loss {losses[-1]:.3f}",
                               unit="epoch")
            if finite and bn_batches:
                recalibrate_batchnorm(model, [_batch(train, crop, batch, rng, scale_jitter, False, False)
                                              for _ in range(bn_batches)], device)
            if epoch_hook is not None:
                epoch_hook(model, epoch)
            dice = validation_dice(model, val_crops, device) if finite else float("nan")
            epoch += 1
            record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "val_dice": dice, "lr": current_lr, "seconds": round(time.perf_counter() - epoch_started, 1)}
            collapsed = not finite
            low = math.isnan(dice) or dice < collapse_dice
            if math.isfinite(dice) and dice >= collapse_dice:
                ever_good = True
            # a network starts near Dice 0: low epochs count once it has been good, or after a grace period
            low_epochs = low_epochs + 1 if low and (ever_good or epoch > collapse_patience) else 0
            if (collapsed or low_epochs >= collapse_patience) and restarts < max_restarts:
                restarts += 1
                lr_factor /= 3
                state, opt_state, good_epoch = good_state
                model.load_state_dict(state)
                optimizer.load_state_dict(opt_state)
                low_epochs = 0
                why = "the loss is not finite" if collapsed else \
                    f"validation Dice below {collapse_dice} for {collapse_patience} epochs"
                record["event"] = (f"training collapsed at epoch {epoch} ({why}): restored the weights of "
                                   f"epoch {good_epoch}, learning rate lowered to {lr * lr_factor:.2g} "
                                   f"(restart {restarts}/{max_restarts})")
                events.append(record["event"])
            elif math.isfinite(dice) and dice >= collapse_dice:
                good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), epoch)
            history.append(record)
            improved = math.isfinite(dice) and dice > best_dice and "event" not in record
            if improved:
                best_dice = dice
            meta = meta_now(epoch)
            if improved:
                save_checkpoint(out, model, meta)
            save_checkpoint(last_path, model, meta, optimizer=optimizer.state_dict())
            message = f"epoch {epoch}/{epochs}: loss {record['loss']:.4f}, val Dice {dice:.4f}, lr {current_lr:.2g}"
            if "event" in record:
                message += " - " + record["event"]
            yield Progress(done, total, epoch, epochs, message, {"record": record}, unit="epoch")
        cancelled = False
    finally:
        if cancelled and history and not out.is_file() and last_path.is_file():
            # cancelled before any improvement was saved: keep the last weights as the result
            ckpt = load_checkpoint(last_path)
            ckpt.pop("optimizer", None)
            import torch as _torch

            from ..core.io import atomic_path

            with atomic_path(out) as tmp:
                _torch.save(ckpt, tmp)
    return StudentResult(out if out.is_file() else None, best_dice, len(history), cancelled, history, events)
