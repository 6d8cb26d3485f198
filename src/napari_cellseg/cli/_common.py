"""What the commands share: the user-facing error, input expansion, output checks, and the U-Net
student's arguments and report (``train-unet`` and ``distill``)."""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from ..core.options import StudentTrainOptions

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> image paths; none is an error."""
    from ..core.io import IMAGE_SUFFIXES

    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in pattern for ch in "*?["):
            paths.extend(sorted(Path(p) for p in glob.glob(pattern, recursive=True)))
        else:
            paths.append(path)
    if not paths:
        raise CliError("no input images found")
    return paths


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK):
        raise CliError(f"output folder {out} is not writable")


def options_from_args(options_type, args):
    """``options_type.from_args(args)``, a bad value as a one-line CLI error."""
    try:
        return options_type.from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def val_suffixes(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_student_arguments(p) -> None:
    p.add_argument("--out", required=True, help="student checkpoint to write (.pt); '<stem>.last.pt' beside it")
    StudentTrainOptions.add_arguments(p)
    p.add_argument("--val-suffixes", default="09,10,19,20",
                   help="time-lapse layout: PosNNN folders whose number ends so are validation")
    p.add_argument("--init", default=None, help="start from the weights of this student checkpoint")
    p.add_argument("--device", default="cpu")


def student_options(args) -> dict:
    options = options_from_args(StudentTrainOptions, args).job_kwargs()
    return {**options, "device": args.device, "init": args.init}


def report_student(progress) -> None:
    if progress.get("record") is not None or (progress.get("phase", "train") == "teacher" and progress.done == progress.total):
        print(progress.message, flush=True)
    elif progress.done == 0 and progress.message:
        print(progress.message, flush=True)


def finish_student(result) -> int:
    for event in result.events:
        print(f"note: {event}", file=sys.stderr)
    if result.path is None:
        raise CliError("training produced no checkpoint")
    print(f"U-Net student written: {result.path} (best validation Dice {result.best_dice:.4f}, "
          f"{result.epochs_done} epochs)")
    return 0
