"""Training the phenotype classifier, with honest validation, and k-fold cross-validation.

Recipe (the seed's, when ImageNet weights are at hand): ResNet50 with one input channel whose first
convolution is the ImageNet one averaged over its three colour channels; everything frozen except
that first convolution and the final linear layer (``freeze="seed"``). Without ImageNet weights
(offline, no file), frozen random layers would learn nothing, so every layer trains, and the run
says so. Mini-batches are augmented (flips, 90-degree rotations, small affine moves, intensity
changes); validation crops never are.

Why eval mode used to collapse: batch-norm layers normalise with each mini-batch's statistics
while training but with running averages in eval mode. Those averages (momentum 0.1) lag far
behind weights that move quickly, as from scratch in a few epochs of few steps, so the eval-mode
network saw activations on another scale and gave one class to every crop while training-mode
accuracy looked excellent. After every epoch the running statistics are therefore recomputed
exactly, over the un-augmented training crops with the current weights ("precise BN"), and every
accuracy reported is measured in eval mode on validation crops.
"""
from __future__ import annotations

import copy
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.options import ClassifierTrainOptions, option_fields, spec_of
from ..core.progress import Progress
from .model import Classifier, adapt_first_conv, build_resnet50

FREEZE_CHOICES = spec_of(next(f for f in option_fields(ClassifierTrainOptions) if f.name == "freeze")).choices
INIT_CHOICES = ("auto", "imagenet", "none")  # or a path to a weights file
DEFAULTS = {f.name: f.default for f in option_fields(ClassifierTrainOptions)}  # defined once, in core.options


@dataclass
class Evaluation:
    """Eval-mode scores of a classifier on labelled crops."""
    confusion: np.ndarray  # rows: true class, columns: predicted
    class_names: list[str]

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.n))

    @property
    def recall(self) -> np.ndarray:
        support = self.confusion.sum(1)
        return np.where(support > 0, np.diag(self.confusion) / np.maximum(support, 1), np.nan)

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present: chance is 1/K whatever the class balance."""
        recall = self.recall
        return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")

    def warnings(self) -> list[str]:
        """Plain warnings when the scores look like a model that does not classify."""
        present = int((self.confusion.sum(1) > 0).sum())
        if self.n == 0 or present < 2:
            return []
        out = []
        chance = 1 / present
        if self.balanced_accuracy <= chance + 0.5 * chance * (1 - chance) + 0.5 / np.sqrt(self.n):
            out.append(f"validation balanced accuracy {self.balanced_accuracy:.2f} is about chance ({chance:.2f}): "
                       "the classifier does not tell these classes apart. Try more epochs, a lower --lr, "
                       "ImageNet weights (--init), the channel that shows the phenotype (--channel) and "
                       "more, better-centred crops per class.")
        predicted = self.confusion.sum(0)
        top = int(np.argmax(predicted))
        share, true_share = predicted[top] / self.n, self.confusion[top].sum() / self.n
        if share >= 0.9 and true_share < 0.75:
            out.append(f"'{self.class_names[top]}' takes {share:.0%} of the validation predictions "
                       f"(it is {true_share:.0%} of the crops): the model has collapsed onto one class. "
                       "Try more epochs, a lower --lr, balanced classes or ImageNet weights (--init).")
        return out

    def report_lines(self) -> list[str]:
        width = max(8, *(len(n) for n in self.class_names))
        lines = [f"validation (eval mode, {self.n} un-augmented crops): accuracy {self.accuracy:.3f}, "
                 f"balanced accuracy {self.balanced_accuracy:.3f}",
                 "per-class recall: " + ", ".join(f"{n} {r:.2f}" if np.isfinite(r) else f"{n} -"
                                                  for n, r in zip(self.class_names, self.recall)),
                 "confusion matrix (rows: true, columns: predicted):",
                 " " * (width + 2) + " ".join(f"{n[:6]:>6}" for n in self.class_names)]
        lines += [f"  {name:>{width}} " + " ".join(f"{v:6d}" for v in row)
                  for name, row in zip(self.class_names, self.confusion)]
        return lines

    def write_csvs(self, stem: str | Path) -> list[Path]:
        """``<stem>_validation.csv`` (per class: support, recall, precision) and ``<stem>_confusion.csv``."""
        from ..core.io import write_csv

        stem = Path(stem)
        predicted = self.confusion.sum(0)
        precision = np.where(predicted > 0, np.diag(self.confusion) / np.maximum(predicted, 1), np.nan)
        names = list(self.class_names)
        per_class = stem.with_name(stem.name + "_validation.csv")
        write_csv(per_class, {"class": names + ["(all)", "(balanced)"],
                              "support": list(self.confusion.sum(1)) + [self.n, self.n],
                              "recall": list(np.round(self.recall, 4)) + [round(self.accuracy, 4),
                                                                         round(self.balanced_accuracy, 4)],
                              "precision": list(np.round(precision, 4)) + ["", ""]})
        confusion = stem.with_name(stem.name + "_confusion.csv")
        write_csv(confusion, {"true \\ predicted": names, **{n: self.confusion[:, k] for k, n in enumerate(names)}})
        return [per_class, confusion]


@dataclass
class TrainResult:
    classifier: Classifier  # the best epoch by validation balanced accuracy (the last without validation)
    last: Classifier
    history: list[dict] = field(default_factory=list)
    evaluation: Evaluation | None = None  # of ``classifier`` on the validation crops
    best_epoch: int | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def confusion(self) -> np.ndarray | None:
        return None if self.evaluation is None else self.evaluation.confusion

    def save(self, out: str | Path) -> dict[str, Path | list[Path]]:
        """Write the best epoch to ``out``, the last one to ``<out>_last.pt``, ``<out>_history.csv`` and, with a
        validation, ``<out>_validation.csv`` and ``_confusion.csv``. Returns the paths by kind ("best", "last",
        "history", "validation": a list, empty without a validation)."""
        from ..core.io import write_csv

        out = Path(out)
        last = out.with_name(out.stem + "_last" + (out.suffix or ".pt"))
        extra = dict(history=self.history, notes=self.notes)
        self.classifier.save(out, best_epoch=self.best_epoch, **extra)
        self.last.save(last, best_epoch=len(self.history), **extra)
        stem = out.with_suffix("")
        history = stem.with_name(stem.name + "_history.csv")
        write_csv(history, {k: [row.get(k, "") for row in self.history] for k in self.history[0]})
        validation = self.evaluation.write_csvs(stem) if self.evaluation is not None else []
        return {"best": out, "last": last, "history": history, "validation": validation}


def load_crop_folders(root: str | Path, size: int | None = None, channels: list[int] | None = None,
                      class_names: list[str] | None = None):
    """(crops (N, C, S, S) in [0, 1], class index per crop, class names, track per crop or None).

    One sub-folder per class. A crop whose file name holds ``track<N>`` (``track12_t3.tif``) belongs
    to track N: frames of one track stay on one side of a validation split.
    """
    import re

    from ..core.io import IMAGE_SUFFIXES
    from .crops import crop_file

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of class sub-folders")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(class_names) if class_names else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root}: folders {unknown} are not among the classes {classes}")
    if not found:
        raise ValueError(f"{root}: expected one sub-folder of crop images per class")
    crops, labels, tracks = [], [], []
    for k, name in enumerate(classes):
        if not (root / name).is_dir():
            continue
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            crops.append(crop_file(path, size, channels))
            labels.append(k)
            match = re.search(r"track[_-]?(\d+)", path.stem, re.IGNORECASE)
            tracks.append(f"{name}/{match.group(1)}" if match else None)
    if not crops:
        raise ValueError(f"{root}: no crop images found")
    shapes = {c.shape for c in crops}
    if len(shapes) > 1:
        raise ValueError(f"{root}: crops differ in shape {sorted(shapes)}; give --crop-size")
    has_tracks = all(t is not None for t in tracks)
    return np.stack(crops), np.array(labels), classes, (np.array(tracks, dtype=object) if has_tracks else None)


def split_validation(labels: np.ndarray, tracks: np.ndarray | None = None, fraction: float = 0.2,
                     seed: int = 0) -> np.ndarray:
    """A boolean validation mask, stratified by class and, when tracks are given, by track.

    Each class gives about ``fraction`` of its crops (at least one group, never all of them); with
    tracks, whole tracks go to one side, each counted under its most frequent class.
    """
    labels = np.asarray(labels)
    groups = np.asarray(tracks, dtype=object) if tracks is not None else np.arange(len(labels)).astype(object)
    rng = np.random.default_rng(seed)
    unique_groups = list(dict.fromkeys(groups.tolist()))
    group_members = {g: np.flatnonzero(groups == g) for g in unique_groups}
    group_class = {g: int(np.bincount(labels[m]).argmax()) for g, m in group_members.items()}
    val = np.zeros(len(labels), bool)
    for k in np.unique(labels):
        class_groups = [g for g in unique_groups if group_class[g] == k]
        if len(class_groups) < 2:
            continue  # one group: it must train
        target = fraction * sum(len(group_members[g]) for g in class_groups)
        taken = 0
        for i in rng.permutation(len(class_groups))[:-1]:  # never the last group: some always train
            if taken >= target and taken:
                break
            val[group_members[class_groups[i]]] = True
            taken += len(group_members[class_groups[i]])
    return val


def _augment(batch, rng: np.random.Generator):
    """Flips, 90-degree rotations, small rotations/moves/zooms and intensity changes, one resampling."""
    import torch

    n, _, h, w = batch.shape
    theta = np.zeros((n, 2, 3), np.float32)
    for i in range(n):
        quarter = int(rng.integers(4)) * np.pi / 2
        angle = quarter + np.deg2rad(rng.uniform(-10, 10))
        scale = rng.uniform(0.9, 1.1)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        c, s = np.cos(angle) / scale, np.sin(angle) / scale
        theta[i, :, :2] = [[c * flip, -s], [s * flip, c]]
        theta[i, :, 2] = rng.integers(-2, 3, 2) * 2 / np.array([w, h])
    grid = torch.nn.functional.affine_grid(torch.from_numpy(theta), list(batch.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-0.05, 0.05, (n, 1, 1, 1)).astype(np.float32))
    return out * gain + offset


def _set_trainable(model, freeze: str) -> None:
    for name, param in model.named_parameters():
        if freeze == "none":
            param.requires_grad = True
        elif freeze == "head":
            param.requires_grad = name.startswith("fc.")
        else:  # seed
            param.requires_grad = name.startswith(("fc.", "conv1."))


def imagenet_cache_file() -> Path | None:
    """torchvision's cached ImageNet ResNet50 weights (V1, the seed's, first), if present; never downloads."""
    import torch
    from torchvision.models import ResNet50_Weights

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for weights in (ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2):
        path = folder / Path(weights.url).name
        if path.is_file():
            return path
    return None


def resolve_init(init) -> tuple[dict | None, str]:
    """(an ImageNet-like ResNet50 state dict or None, a sentence saying what the run starts from).

    ``init``: a weights file; "auto" (torchvision's cache if it holds the weights, else random);
    "imagenet" (torchvision's weights, downloaded when not cached: needs the network); "none".
    """
    import torch

    from .model import _state_dict_of

    if init is None or str(init) == "none":
        return None, "random initialisation (--init none)"
    if str(init) == "auto":
        path = imagenet_cache_file()
        if path is None:
            return None, ("no ImageNet weights at hand (no --init file, none in torchvision's cache "
                          f"{Path(torch.hub.get_dir()) / 'checkpoints'}): starting from random weights")
        init = path
    if str(init) == "imagenet":
        from torchvision.models import ResNet50_Weights

        try:
            state = ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # offline
            raise ValueError(f"could not download torchvision's ImageNet ResNet50 weights ({exc}); "
                             "give a local file with --init FILE or use --init auto") from exc
        return state, "torchvision's ImageNet ResNet50 weights"
    path = Path(init)
    if not path.is_file():
        raise ValueError(f"--init {path}: no such weights file")
    state = _state_dict_of(torch.load(path, map_location="cpu", weights_only=True))
    return {k.removeprefix("module."): v for k, v in state.items()}, f"ImageNet weights from {path.name}"


@dataclass
class _Recipe:
    model: object
    freeze: str
    notes: list[str]


def build_for_training(n_classes: int, in_channels: int, init="auto", freeze: str = "seed") -> _Recipe:
    """The network and what trains, following the seed's recipe when ImageNet weights are at hand."""
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got '{freeze}'")
    model = build_resnet50(n_classes, in_channels)
    state, origin = resolve_init(init)
    notes = []
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if "conv1.weight" not in state:
            raise ValueError(f"{origin}: no conv1.weight; not a ResNet50 state dict")
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], in_channels)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise ValueError(f"{origin}: does not fit a ResNet50 (missing {missing[:3]}, unexpected {unexpected[:3]})")
        trains = {"seed": "only the first convolution and the final layer train (the seed's recipe)",
                  "head": "only the final layer trains", "none": "every layer trains"}[freeze]
        notes.append(f"initialised from {origin}; first convolution averaged over RGB; {trains}")
    else:
        if freeze != "none":
            notes.append(f"{origin}; every layer trains (frozen random layers learn nothing; not '{freeze}')")
            freeze = "none"
        else:
            notes.append(f"{origin}; every layer trains")
    _set_trainable(model, freeze)
    return _Recipe(model, freeze, notes)


def recalibrate_batch_norm(model, crops: np.ndarray, batch_size: int = 256, device: str = "cpu") -> None:
    """Recompute every batch norm's running mean and variance exactly over ``crops`` (un-augmented),
    with the current weights; nothing else changes."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(crops) < 2:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    with torch.no_grad():
        for batch in np.array_split(np.arange(len(crops)), max(1, int(np.ceil(len(crops) / batch_size)))):
            if len(batch) > 1:
                model(torch.from_numpy(crops[batch]).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def evaluate(model, crops: np.ndarray, labels: np.ndarray, class_names: list[str], batch_size: int = 256,
             device: str = "cpu") -> tuple[Evaluation, float]:
    """(eval-mode scores, mean cross-entropy) of ``model`` on un-augmented crops."""
    import torch

    model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            logits.append(model(torch.from_numpy(crops[start:start + batch_size]).to(device)).float().cpu())
    logits = torch.cat(logits) if logits else torch.zeros(0, len(class_names))
    target = torch.from_numpy(np.asarray(labels, np.int64))
    loss = float(torch.nn.functional.cross_entropy(logits, target)) if len(target) else float("nan")
    predicted = logits.argmax(1).numpy()
    return Evaluation(confusion_matrix(np.asarray(labels), predicted, len(class_names)), list(class_names)), loss


def train_iter(
    crops: np.ndarray, labels: np.ndarray, class_names: list[str], *, val: tuple[np.ndarray, np.ndarray] | None = None,
    tracks: np.ndarray | None = None, val_fraction: float = DEFAULTS["val_fraction"],
    epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
    freeze: str = DEFAULTS["freeze"], init=DEFAULTS["init"], seed: int = 0, fold: int | None = None,
    device: str = "cpu", crop_mode: str = "resize",
) -> Generator[Progress, None, TrainResult]:
    """Train; after each epoch score the validation crops in eval mode. Returns the best epoch.

    ``val``: curated validation crops and labels; otherwise ``val_fraction`` of the crops are held
    out, stratified by class and by ``tracks`` (one id per crop) when given; 0: no validation.
    """
    import torch

    from ..core.backend import resolve_device

    device = resolve_device(device)
    crops = np.asarray(crops, np.float32)
    crops = crops[:, None] if crops.ndim == 3 else crops
    labels = np.asarray(labels, np.int64)
    if len(crops) != len(labels) or len(crops) == 0:
        raise ValueError(f"{len(crops)} crops but {len(labels)} labels")
    in_channels, size = crops.shape[1], crops.shape[-1]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    recipe = build_for_training(len(class_names), in_channels, init, freeze)
    model, notes = recipe.model.to(device), list(recipe.notes)
    if val is not None:
        val_crops = np.asarray(val[0], np.float32)
        val_crops, val_labels = (val_crops[:, None] if val_crops.ndim == 3 else val_crops), np.asarray(val[1])
        if val_crops.shape[1:] != crops.shape[1:]:
            raise ValueError(f"validation crops {val_crops.shape[1:]} differ from training crops {crops.shape[1:]}")
        notes.append(f"validation: {len(val_crops)} curated crops")
    elif val_fraction > 0:
        held_out = split_validation(labels, tracks, val_fraction, seed)
        val_crops, val_labels = crops[held_out], labels[held_out]
        crops, labels = crops[~held_out], labels[~held_out]
        by = "class and track" if tracks is not None else "class"
        notes.append(f"validation: {len(val_crops)} of {len(held_out)} crops held out (stratified by {by})"
                     if len(val_crops) else "validation: too few crops per class to hold any out")
    else:
        val_crops, val_labels = crops[:0], labels[:0]
    has_val = len(val_crops) > 0
    if not has_val:
        notes.append("no validation crops: no accuracy can be reported, and the last epoch is kept")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = max(1, len(crops) // max(2, batch_size))  # equal batches of at least 2: batch norm needs them
    total = epochs * steps
    history = []
    yield Progress(0, total, 0, epochs, "; ".join(notes), {"fold": fold}, unit="epoch")

    def snapshot():
        return Classifier(copy.deepcopy(model).cpu().eval(), list(class_names), in_channels, size,
                          crop_mode=crop_mode)

    best = best_key = best_epoch = best_eval = None
    train_x = torch.from_numpy(crops)
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for step, index in enumerate(np.array_split(rng.permutation(len(crops)), steps)):
            x = _augment(train_x[index], rng).to(device)
            y = torch.from_numpy(labels[index]).to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            yield Progress((epoch - 1) * steps + step + 1, total, epoch, epochs,
                           f"epoch {epoch}/{epochs}, step {step + 1}/{steps}", {"fold": fold}, unit="epoch")
        recalibrate_batch_norm(model, crops, device=device)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if has_val:
            evaluation, val_loss = evaluate(model, val_crops, val_labels, class_names, device=device)
            row.update(val_loss=val_loss, val_accuracy=evaluation.accuracy,
                       val_balanced_accuracy=evaluation.balanced_accuracy)
            key = (evaluation.balanced_accuracy, -val_loss)
            if best_key is None or key > best_key:
                best, best_key, best_epoch, best_eval = snapshot(), key, epoch, evaluation
        history.append(row)
        yield Progress(epoch * steps, total, epoch, epochs, f"epoch {epoch}/{epochs} done",
                       {"train_loss": row["train_loss"], "val_accuracy": row.get("val_accuracy"),
                        "val_balanced_accuracy": row.get("val_balanced_accuracy"), "fold": fold}, unit="epoch")
    model.eval()
    last = snapshot()
    if best is None:
        best, best_epoch = last, epochs
    result = TrainResult(best, last, history, best_eval, best_epoch, notes)
    if best_eval is not None:
        result.warnings = best_eval.warnings()
    return result


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def cross_validate_iter(crops, labels, class_names, folds: int = 5, seed: int = 0, tracks=None, **train_kwargs):
    """k-fold cross-validation, stratified by class (and by track when given): eval-mode balanced
    accuracy of each fold's last epoch on its held-out crops, their mean and spread, summed confusion."""
    labels = np.asarray(labels)
    crops = np.asarray(crops, np.float32)
    crops = crops[:, None] if crops.ndim == 3 else crops
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    train_kwargs.pop("val", None)
    train_kwargs.pop("val_fraction", None)
    rng = np.random.default_rng(seed)
    groups = np.asarray(tracks, dtype=object) if tracks is not None else np.arange(len(labels)).astype(object)
    unique_groups = list(dict.fromkeys(groups.tolist()))
    group_class = {g: int(np.bincount(labels[groups == g]).argmax()) for g in unique_groups}
    fold_of = np.zeros(len(labels), int)
    for k in np.unique(labels):  # each class's groups dealt round the folds
        class_groups = [g for g in unique_groups if group_class[g] == k]
        for i, j in enumerate(rng.permutation(len(class_groups))):
            fold_of[groups == class_groups[j]] = i % folds
    balanced, accuracies = [], []
    confusion = np.zeros((len(class_names), len(class_names)), np.int64)
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        result = yield from train_iter(crops[train], labels[train], class_names, val=(crops[test], labels[test]),
                                       seed=seed + fold, fold=fold, **train_kwargs)
        evaluation, _ = evaluate(result.last.model, crops[test], labels[test], class_names)
        balanced.append(evaluation.balanced_accuracy)
        accuracies.append(evaluation.accuracy)
        confusion += evaluation.confusion
    return {"fold_balanced_accuracy": balanced, "fold_accuracy": accuracies,
            "mean_balanced_accuracy": float(np.mean(balanced)), "std_balanced_accuracy": float(np.std(balanced)),
            "mean_accuracy": float(np.mean(accuracies)), "confusion": confusion}
