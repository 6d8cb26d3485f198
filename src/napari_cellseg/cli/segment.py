"""``napari-cellseg segment``: segment images (or detect boxes), locally or on a Dask cluster."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.options import SegmentOptions
from ._common import EXIT_BAD_INPUT, CliError, check_writable, expand_inputs, options_from_args

HELP = ("segment images (or detect boxes); writes <stem>_labels.tif (not for box detectors), _objects.csv, "
        "_counts.csv, _provenance.json, _instances.json")

SCALE_RULE = """\
The scale (model pixels per image pixel) comes from, in this order: --zoom; --native (scale 1, tiled);
--diameter D (objects D px across shown at the model's reference diameter: --model-diameter, the
checkpoint's own, or, for a model without one, measured once in a first pass at its default scale);
otherwise the model's default: for a checkpoint from plain ultralytics its predict geometry at the
training imgsz (the image's long side fitted to imgsz, one pass, as model.predict does), for the
plugin's own checkpoints their training scale (with --diameter auto). --tile only cuts the image into
pieces: it never changes the scale. The scale used is printed after each image and stored in the
provenance file."""


def add_parser(sub) -> argparse.ArgumentParser:
    seg = sub.add_parser("segment", help=HELP, epilog=SCALE_RULE, formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("images", nargs="+", help="image files (TIFF, PNG, JPEG), folders or glob patterns")
    seg.add_argument("--model", action="append", default=None,
                     help="checkpoint path or shipped name (default: nuclei); repeat for an ensemble")
    seg.add_argument("--out", default=".", help="output folder (default: current folder)")
    SegmentOptions.add_arguments(seg)  # the options' help is the widget's tooltips
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    rgb = seg.add_mutually_exclusive_group()
    rgb.add_argument("--rgb", dest="rgb", action="store_true", default=None, help="last axis is RGB(A) colour")
    rgb.add_argument("--no-rgb", dest="rgb", action="store_false", help="last axis is not colour")
    seg.add_argument("--rle-csv", default=None, help="also write all instances as a Kaggle Sartorius run-length CSV")
    seg.add_argument("--coco", default=None, help="also write all instances as COCO JSON: each as the model predicted it (predicted box, "
                     "score, class, whole RLE mask; overlaps kept, unlike the _labels.tif)")
    seg.add_argument("--scheduler", default=None, help="address of a Dask scheduler: one task per image")
    seg.add_argument("--workers", type=int, default=0, help="run on a local Dask cluster of N worker processes")
    seg.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    seg.add_argument("-q", "--quiet", action="store_true")
    return seg


def run(args) -> int:
    from ..backends import load_model

    inputs = expand_inputs(args.images)
    out = Path(args.out)
    check_writable(out)

    options = options_from_args(SegmentOptions, args)
    options.rgb = args.rgb
    parameters = options.pipeline_kwargs()
    args.model = args.model or ["nuclei"]
    model = load_model(args.model, device=args.device)  # fails fast on a bad model, before any work
    class_names = model.info.class_names
    detector = model.info.task == "detect"
    if detector and (args.rle_csv or args.coco):
        raise CliError(f"{args.model[0]} is a box detector: it draws no masks for --rle-csv or --coco; its boxes are "
                       "in each <stem>_objects.csv")
    if args.scheduler or args.workers:
        from ..pipeline.cluster import segment_files_on_cluster  # imports Dask's distributed: only for clusters

        del model  # each Dask worker loads its own copy once
        outcomes = segment_files_on_cluster(
            inputs, args.model, out, parameters, scheduler=args.scheduler, n_workers=args.workers or 2,
            device=args.device, overwrite=args.overwrite,
        )
    else:
        outcomes = (_segment_locally(path, model, out, parameters, args) for path in inputs)
    failed = 0
    for outcome in outcomes:
        name = Path(outcome.path).name
        if outcome.status == "failed":
            failed += 1
            message = outcome.message if outcome.message.startswith(outcome.path) else f"{name}: {outcome.message}"
            print(f"napari-cellseg: error: {message}", file=sys.stderr)
        elif outcome.status == "skipped":
            if not args.quiet:
                print(f"{name}: already done, skipped (use --overwrite to redo)")
        else:
            if outcome.message:
                print(f"warning: {name}: {outcome.message}", file=sys.stderr)
            if not args.quiet:
                written = "_objects.csv" if detector else "_labels.tif"
                kind = "detections" if detector else "objects"
                scale = f" ({outcome.scale})" if outcome.scale else ""
                print(f"{name}: {outcome.n_objects} {kind}{scale} -> {out / (Path(outcome.path).stem + written)}")
    if args.rle_csv or args.coco:
        from ..pipeline.batch import write_instance_exports

        if args.rle_csv:
            n = write_instance_exports(inputs, out, rle_csv=args.rle_csv)["rle_csv"]
            print(f"{n} instances written as run-length CSV: {args.rle_csv}")
        if args.coco:
            n = write_instance_exports(inputs, out, coco=args.coco, class_names=class_names)["coco"]
            print(f"{n} instances written as COCO JSON: {args.coco}")
    return EXIT_BAD_INPUT if failed else 0


def _segment_locally(path: Path, model, out: Path, parameters: dict, args):
    """One file through ``pipeline.batch.segment_file``, with a progress bar on a terminal."""
    from tqdm import tqdm

    from ..pipeline.batch import FileOutcome, is_done, segment_file

    if not args.overwrite and is_done(path, out):
        return FileOutcome(str(path), "skipped")
    # disable=None: a bar on a terminal, none in logs and pipes
    with tqdm(total=1, desc=path.name, unit="tile", disable=True if args.quiet else None, leave=False,
              file=sys.stderr) as bar:
        def on_progress(progress):
            bar.total = progress.total
            bar.n = progress.done
            bar.refresh()

        return segment_file(path, model, out, parameters, on_progress)
