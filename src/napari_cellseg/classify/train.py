"""Training the phenotype classifier (the seed's recipe by default) and k-fold cross-validation.

Recipe: ResNet50, one input channel, first convolution averaged from an ImageNet
initialisation over its three colour channels; everything frozen except that first
convolution and the final linear layer (``freeze="seed"``); mini-batches with flips,
90-degree rotations, small affine moves and intensity changes. Without an
initialisation file the network starts from random weights; frozen random layers
would learn nothing, so then every layer trains, and the progress says so.
"""
from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import Classifier, adapt_first_conv, build_resnet50

FREEZE_CHOICES = ("seed", "head", "none")


@dataclass(frozen=True)
class EpochProgress:
    done: int
    total: int
    epoch: int
    epochs: int
    message: str = ""
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    fold: int | None = None


@dataclass
class TrainResult:
    classifier: Classifier
    history: list[dict] = field(default_factory=list)
    confusion: np.ndarray | None = None  # rows: true class, columns: predicted (validation)
    notes: list[str] = field(default_factory=list)


def load_crop_folders(root: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(crops (N, C, S, S) in [0, 1], class index per crop, class names) from one folder per class."""
    from ..core.io import IMAGE_SUFFIXES
    from .crops import crop_file

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder of crop images per class")
    crops, labels = [], []
    for k, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            crops.append(crop_file(path, size))
            labels.append(k)
    if not crops:
        raise ValueError(f"{root}: no crop images found")
    shapes = {c.shape for c in crops}
    if len(shapes) > 1:
        raise ValueError(f"{root}: crops differ in shape {sorted(shapes)}; give --crop-size")
    return np.stack(crops), np.array(labels), classes


def _augment(batch, rng: np.random.Generator):
    import torch
    from torchvision.transforms.v2 import functional as F

    out = []
    for sample in batch:
        if rng.random() < 0.5:
            sample = torch.flip(sample, dims=[2])
        if rng.random() < 0.5:
            sample = torch.flip(sample, dims=[1])
        sample = torch.rot90(sample, k=int(rng.integers(4)), dims=[1, 2])
        sample = F.affine(sample, angle=float(rng.uniform(-10, 10)), translate=[int(rng.integers(-2, 3)),
                          int(rng.integers(-2, 3))], scale=float(rng.uniform(0.9, 1.1)), shear=[0.0])
        sample = sample * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.05, 0.05))
        out.append(sample)
    return torch.stack(out)


def _set_trainable(model, freeze: str) -> None:
    for name, param in model.named_parameters():
        if freeze == "none":
            param.requires_grad = True
        elif freeze == "head":
            param.requires_grad = name.startswith("fc.")
        else:  # seed
            param.requires_grad = name.startswith(("fc.", "conv1."))


def train_iter(
    crops: np.ndarray, labels: np.ndarray, class_names: list[str], *, val: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, freeze: str = "seed", init: str | Path | None = None,
    seed: int = 0, fold: int | None = None,
) -> Generator[EpochProgress, None, TrainResult]:
    import torch

    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got '{freeze}'")
    crops = np.asarray(crops, np.float32)
    crops = crops[:, None] if crops.ndim == 3 else crops
    labels = np.asarray(labels, np.int64)
    if len(crops) != len(labels) or len(crops) == 0:
        raise ValueError(f"{len(crops)} crops but {len(labels)} labels")
    in_channels, size = crops.shape[1], crops.shape[-1]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_resnet50(len(class_names), in_channels)
    notes = []
    if init is not None:
        state = torch.load(init, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], in_channels)
        model.load_state_dict(state, strict=False)
        notes.append(f"initialised from {Path(init).name}; first convolution averaged over its channels")
    elif freeze != "none":
        notes.append(f"no initialisation file: training from scratch, all layers trained (not '{freeze}')")
        freeze = "none"
    else:
        notes.append("no initialisation file: training from scratch")
    _set_trainable(model, freeze)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = int(np.ceil(len(crops) / batch_size))
    total = epochs * steps
    history = []
    yield EpochProgress(0, total, 0, epochs, notes[-1], fold=fold)
    classifier = Classifier(model, list(class_names), in_channels, size)
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(crops))
        losses, correct = [], 0
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            x = _augment(torch.from_numpy(crops[index]), rng)
            y = torch.from_numpy(labels[index])
            optimizer.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            yield EpochProgress((epoch - 1) * steps + step + 1, total, epoch, epochs, f"epoch {epoch}/{epochs}",
                                fold=fold)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_accuracy": correct / len(crops)}
        if val is not None:
            row["val_accuracy"] = float(np.mean(classifier.predict(val[0]).argmax(1) == np.asarray(val[1])))
        history.append(row)
        yield EpochProgress(epoch * steps, total, epoch, epochs, f"epoch {epoch}/{epochs} done",
                            row["train_loss"], row["train_accuracy"], row.get("val_accuracy"), fold)
    confusion = None
    if val is not None:
        confusion = confusion_matrix(np.asarray(val[1]), classifier.predict(val[0]).argmax(1), len(class_names))
    model.eval()
    return TrainResult(classifier, history, confusion, notes)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(predicted)), 1)
    return matrix


def cross_validate_iter(crops, labels, class_names, folds: int = 5, seed: int = 0, **train_kwargs):
    """k-fold (stratified) cross-validation: per-fold and mean validation accuracy, summed confusion."""
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), int)
    for k in np.unique(labels):  # stratified: each class spread over the folds
        members = rng.permutation(np.flatnonzero(labels == k))
        fold_of[members] = np.arange(len(members)) % folds
    accuracies, confusion = [], np.zeros((len(class_names), len(class_names)), np.int64)
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        result = yield from train_iter(crops[train], labels[train], class_names, val=(crops[test], labels[test]),
                                       seed=seed + fold, fold=fold, **train_kwargs)
        accuracies.append(result.history[-1]["val_accuracy"])
        confusion += result.confusion
    return {"fold_accuracy": accuracies, "mean_accuracy": float(np.mean(accuracies)), "confusion": confusion}
