"""An ultralytics run folder read back: what a YOLO checkpoint's training wrote beside it.

ultralytics saves ``<project>/<name>/weights/best.pt`` (and ``last.pt``) and, in ``<project>/<name>``,
``args.yaml`` (the training arguments), ``results.csv`` (one row per epoch: losses, validation metrics,
learning rates) and, with ``plots=True``, PNG curves (``results.png``, ``BoxF1_curve.png`` or
``F1_curve.png``, ``PR_curve.png``, ``confusion_matrix.png`` ...; the names vary by version).

Pure Python (csv, yaml): no ultralytics, Qt or napari. A missing, empty or malformed file gives a note in
``TrainingRun.notes``, never an exception.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

# the metrics summarised for the best epoch, in display order; B: boxes, M: masks
METRICS = ("precision", "recall", "mAP50", "mAP50-95")
KINDS = ("B", "M")
# the training arguments worth a line, in display order
ESSENTIAL_ARGS = ("task", "model", "data", "epochs", "imgsz", "batch", "patience", "optimizer", "lr0",
                  "pretrained", "device")
_METRIC = re.compile(r"^metrics/(precision|recall|mAP50-95|mAP50)\((B|M)\)$")
# YOLOv5's and the first YOLOv8 releases' names for the box metrics
_OLD_NAMES = {"metrics/precision": ("precision", "B"), "metrics/recall": ("recall", "B"),
              "metrics/mAP_0.5": ("mAP50", "B"), "metrics/mAP_0.5:0.95": ("mAP50-95", "B")}


@dataclass
class TrainingRun:
    """What one ultralytics run folder holds, parsed."""

    folder: Path
    args: dict = field(default_factory=dict)  # args.yaml as written
    columns: dict[str, list[float]] = field(default_factory=dict)  # results.csv: header (stripped) -> values
    best: dict | None = None  # the best epoch: {"epoch": n, "fitness": f, "mAP50-95(B)": ..., ...}
    images: list[Path] = field(default_factory=list)  # the curve and summary PNGs, results.png first
    notes: list[str] = field(default_factory=list)  # what could not be read, for a person

    @property
    def epochs(self) -> list[float]:
        return self.columns.get("epoch") or list(range(1, self.n_rows + 1))

    @property
    def n_rows(self) -> int:
        return max((len(v) for v in self.columns.values()), default=0)

    def loss_columns(self) -> list[str]:
        return [c for c in self.columns if "loss" in c]

    def metric_columns(self) -> list[str]:
        return [c for c in self.columns if metric_key(c) is not None]

    def essentials(self) -> dict:
        """The training arguments a person asks about first (those present)."""
        return {k: self.args[k] for k in ESSENTIAL_ARGS if k in self.args}

    def describe_best(self) -> str:
        """``best epoch 12 of 60: boxes P 0.91 R 0.88 mAP50 0.93 mAP50-95 0.71; masks ...``."""
        if not self.best:
            return ""
        parts = []
        for kind, word in (("B", "boxes"), ("M", "masks")):
            values = [f"{short} {self.best[f'{m}({kind})']:.3g}" for m, short in
                      zip(METRICS, ("P", "R", "mAP50", "mAP50-95")) if f"{m}({kind})" in self.best]
            if values:
                parts.append(f"{word} " + " ".join(values))
        total = f" of {self.n_rows}" if self.n_rows else ""
        return f"best epoch {self.best['epoch']:g}{total}: " + "; ".join(parts)

    def headline(self) -> str:
        """``best epoch 12, mAP50-95 0.71`` (the masks' where there are masks): a section title."""
        if not self.best:
            return ""
        key = next((f"mAP50-95({k})" for k in ("M", "B") if f"mAP50-95({k})" in self.best), None)
        kind = {"mAP50-95(M)": " masks", "mAP50-95(B)": ""}.get(key, "")
        return f"best epoch {self.best['epoch']:g}" + (f",{kind} mAP50-95 {self.best[key]:.3g}" if key else "")

    def describe(self) -> str:
        """A few lines for a person: the folder, the essential arguments, the best epoch, the notes."""
        lines = [f"training run: {self.folder}"]
        if self.essentials():
            lines.append(", ".join(f"{k} {v}" for k, v in self.essentials().items()))
        if self.best:
            lines.append(self.describe_best())
        lines += self.notes
        return "\n".join(lines)

    def record(self) -> dict:
        """The run for a provenance file: folder, imgsz and epochs trained, the best epoch's metrics."""
        return {"folder": str(self.folder), "imgsz": self.args.get("imgsz"), "epochs": self.args.get("epochs"),
                "epochs_run": self.n_rows, "model": self.args.get("model"), "data": self.args.get("data"),
                "best": dict(self.best) if self.best else None, "notes": list(self.notes)}


def metric_key(column: str) -> str | None:
    """``"mAP50-95(B)"`` for ``metrics/mAP50-95(B)`` (and for older versions' names), None for other columns."""
    column = column.strip()
    if column in _OLD_NAMES:
        name, kind = _OLD_NAMES[column]
        return f"{name}({kind})"
    match = _METRIC.match(column)
    return f"{match.group(1)}({match.group(2)})" if match else None


def run_folder_of(checkpoint) -> Path | None:
    """The ultralytics run folder a checkpoint came from: ``weights/..`` (or the checkpoint's own folder)
    when it holds ``results.csv`` or ``args.yaml``; None otherwise (e.g. a shipped or copied model)."""
    try:
        path = Path(checkpoint)
        if not path.is_file():
            return None
        candidates = [path.parent.parent] if path.parent.name == "weights" else []
        candidates.append(path.parent)
        for folder in candidates:
            if (folder / "results.csv").is_file() or (folder / "args.yaml").is_file():
                return folder.resolve()
    except (OSError, ValueError, TypeError):
        return None
    return None


def _float(text: str) -> float:
    text = text.strip()
    return float(text) if text else math.nan


def read_results_csv(path: Path) -> tuple[dict[str, list[float]], list[str]]:
    """(header -> float values, notes) of a results.csv; headers stripped of the spaces older versions
    padded them with; a row of another length or a value that is no number is skipped with a note."""
    notes: list[str] = []
    if not path.is_file():
        return {}, [f"no {path.name} in the run folder"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [f"{path.name} could not be read ({exc})"]
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if not rows:
        return {}, [f"{path.name} is empty"]
    header = [h.strip() for h in rows[0]]
    if not any(header) or len(set(header)) != len(header):
        return {}, [f"{path.name} has no usable header line"]
    columns: dict[str, list[float]] = {h: [] for h in header}
    skipped = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(header):
                raise ValueError
            values = [_float(cell) for cell in row]
        except ValueError:
            skipped.append(line)
            continue
        for h, v in zip(header, values):
            columns[h].append(v)
    if skipped:
        lines = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        notes.append(f"{path.name}: {len(skipped)} malformed line(s) skipped (line {lines})")
    if not any(columns.values()):
        notes.append(f"{path.name} has no epoch rows that could be read")
        return {}, notes
    if not any(metric_key(h) for h in header):
        notes.append(f"{path.name} has no validation metrics (metrics/...(B) columns)")
    return columns, notes


def best_epoch(columns: dict[str, list[float]]) -> dict | None:
    """The epoch ultralytics keeps as best.pt: the highest fitness, which is mAP50-95 of the boxes plus,
    for a segmentation model, that of the masks (ultralytics 8.3 and later; mAP50 where no mAP50-95 was
    logged); the first such epoch on a tie. Its precision, recall, mAP50 and mAP50-95 (B and M), or None
    without metric columns."""
    keys = {metric_key(c): c for c in columns if metric_key(c)}
    scored = [keys[f"mAP50-95({k})"] for k in KINDS if f"mAP50-95({k})" in keys] or \
             [keys[f"mAP50({k})"] for k in KINDS if f"mAP50({k})" in keys]
    if not scored:
        return None
    n = min(len(columns[c]) for c in scored)
    fitness = [sum(0.0 if math.isnan(columns[c][i]) else columns[c][i] for c in scored) for i in range(n)]
    if not fitness:
        return None
    row = max(range(n), key=lambda i: (fitness[i], -i))
    epochs = columns.get("epoch")
    best = {"epoch": epochs[row] if epochs and row < len(epochs) else row + 1, "fitness": fitness[row]}
    for kind in KINDS:
        for metric in METRICS:
            key = f"{metric}({kind})"
            if key in keys and row < len(columns[keys[key]]):
                best[key] = columns[keys[key]][row]
    return best


def _image_order(path: Path) -> tuple:
    name = path.name.lower()
    return (0 if name == "results.png" else 1 if "curve" in name else 2 if "confusion" in name else 3, name)


def read_training_run(checkpoint) -> TrainingRun | None:
    """The run folder of ``checkpoint`` parsed (see ``TrainingRun``), or None when it has none."""
    folder = run_folder_of(checkpoint)
    if folder is None:
        return None
    run = TrainingRun(folder=folder)
    args_path = folder / "args.yaml"
    if args_path.is_file():
        try:
            import yaml

            args = yaml.safe_load(args_path.read_text(encoding="utf-8"))
            if isinstance(args, dict):
                run.args = args
            else:
                run.notes.append("args.yaml holds no training arguments")
        except Exception as exc:  # noqa: BLE001 - a broken file is a note, never a failure to load the model
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            run.notes.append(f"args.yaml could not be read ({type(exc).__name__}: "
                             f"{getattr(exc, 'problem', None) or exc}{where})")
    else:
        run.notes.append("no args.yaml in the run folder")
    run.columns, notes = read_results_csv(folder / "results.csv")
    run.notes += notes
    run.best = best_epoch(run.columns)
    try:
        run.images = sorted((p for p in folder.glob("*.png") if p.is_file()), key=_image_order)
    except OSError:
        run.images = []
    return run


def training_run_record(checkpoint) -> dict | None:
    """``TrainingRun.record()`` of a checkpoint's run folder (None without one, or for a name or built-in
    method): what the run summary and the provenance file keep."""
    if not checkpoint:
        return None
    try:
        run = read_training_run(checkpoint)
    except Exception:  # noqa: BLE001 - the provenance must never cost a segmentation
        return None
    return None if run is None else run.record()
