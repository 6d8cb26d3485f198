"""``napari-cellseg`` command line: headless runs of the same pipeline the widgets use.

One module per command (``segment.py``, ``evaluate.py``, ...), each with ``add_parser(sub)`` (its
arguments) and ``run(args)`` (parse the input, call the pipeline or a model family, print);
``_common.py`` holds the shared helpers. Heavy libraries are imported inside ``run``, so
``napari-cellseg --help`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import (classify, demo, distill, evaluate, export, export_onnx, finetune, segment, track,
               train_classifier, train_unet)
from ._common import EXIT_BAD_INPUT, CliError

# in the order ``--help`` lists them
COMMANDS = (segment, evaluate, export, export_onnx, finetune, train_unet, distill, track, train_classifier, classify, demo)

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="napari-cellseg", description="Cell segmentation for napari, headless.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..classifier.model import ClassifierLoadError
    from ..core.backend import ModelLoadError
    from ..core.io import ImageReadError
    from ..core.normalize import ImageInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ModelLoadError, ClassifierLoadError, ImageReadError, ImageInputError, ValueError,
            OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"napari-cellseg: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("napari-cellseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line, traceback on request
        if os.environ.get("NAPARI_CELLSEG_DEBUG"):
            raise
        print(f"napari-cellseg: internal error: {type(exc).__name__}: {exc} "
              "(set NAPARI_CELLSEG_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
