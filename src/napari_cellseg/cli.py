"""``napari-cellseg`` command line: headless runs of the same core the widgets use."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

from .core.options import ClassifierTrainOptions, FinetuneOptions, SegmentOptions, StudentTrainOptions

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _expand_inputs(patterns: list[str]) -> list[Path]:
    from .core.io import IMAGE_SUFFIXES

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


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK):
        raise CliError(f"output folder {out} is not writable")


def cmd_segment(args) -> int:
    from .backends import load_model

    inputs = _expand_inputs(args.images)
    out = Path(args.out)
    _check_writable(out)

    try:
        options = SegmentOptions.from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
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
        from .pipeline.cluster import segment_files_on_cluster  # imports Dask's distributed: only for clusters

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
        _write_instance_exports(inputs, out, args, class_names)
    return EXIT_BAD_INPUT if failed else 0


def _write_instance_exports(inputs: list[Path], out: Path, args, class_names: dict | None = None) -> None:
    """Sartorius run-length CSV and/or COCO JSON over every segmented input, from the written outputs."""
    import csv
    import json

    from .core.io import read_image
    from .core.submission import write_coco_json, write_sartorius_csv

    def items(with_table: bool):
        for path in inputs:
            labels_path = out / f"{path.stem}_labels.tif"
            if not labels_path.is_file():
                continue
            labels = read_image(labels_path, lazy=False)
            if not with_table:
                yield path.stem, labels
                continue
            with open(out / f"{path.stem}_objects.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            table = {key: np.array([float(r[key]) for r in rows]) for key in ("label", "frame", "score", "class_id")}
            table = {k: (v.astype(np.int64) if k != "score" else v) for k, v in table.items()}
            # the instances as predicted, overlaps kept (written by this version's runs); else the labels
            instances_path = out / f"{path.stem}_instances.json"
            predicted = json.loads(instances_path.read_text())["instances"] if instances_path.is_file() else None
            yield path.stem, labels, table, predicted

    if args.rle_csv:
        n = write_sartorius_csv(args.rle_csv, items(False))
        print(f"{n} instances written as run-length CSV: {args.rle_csv}")
    if args.coco:
        n = write_coco_json(args.coco, items(True), class_names)
        print(f"{n} instances written as COCO JSON: {args.coco}")


def _segment_locally(path: Path, model, out: Path, parameters: dict, args):
    from tqdm import tqdm

    from .pipeline.batch import FileOutcome, is_done, segment_file

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


def cmd_evaluate(args) -> int:
    import json

    from .core.box_evaluation import is_box_prediction

    if args.model or args.data or (args.pred and is_box_prediction(Path(args.pred))):
        return _evaluate_boxes(args)
    if not args.pred or not args.gt:
        raise CliError("give PRED and GT (label images or folders), or --model and --data for a box detector")
    from .core.evaluation import SUMMARY_COLUMNS, evaluate_files, summary_row
    from .core.io import write_csv

    rows = list(evaluate_files(Path(args.pred), Path(args.gt)))
    table = rows + ([summary_row(rows)] if len(rows) > 1 else [])
    if args.csv:
        write_csv(args.csv, {c: [r[c] for r in table] for c in SUMMARY_COLUMNS})
    if args.json:
        print(json.dumps({"images": rows, "mean": summary_row(rows)}, indent=2, default=float))
        return 0
    widths = [max(len(c), 8) for c in SUMMARY_COLUMNS]
    widths[0] = max([len(str(r["name"])) for r in table] + [4])
    print("  ".join(c.rjust(w) for c, w in zip(SUMMARY_COLUMNS, widths)))
    for row in table:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in SUMMARY_COLUMNS]
        print("  ".join(cell.rjust(w) for cell, w in zip(cells, widths)))
    return 0


def cmd_export(args) -> int:
    from .core.datasets import export_dataset
    from .core.io import read_image

    images = _expand_inputs(args.images)
    labels = _expand_inputs(args.labels)
    if len(images) != len(labels):
        raise CliError(f"{len(images)} images but {len(labels)} label images; give one label image per image")
    samples = ((img.stem, read_image(img, lazy=False), read_image(lab, lazy=False)) for img, lab in zip(images, labels))
    target = export_dataset(samples, args.out, args.format, args.val_fraction, class_names=args.class_names)
    print(f"{args.format} dataset written: {target}")
    return 0


def cmd_finetune(args) -> int:
    from tqdm import tqdm

    from .pipeline.segment import run

    data = Path(args.data)
    data_yaml = data / "data.yaml" if data.is_dir() and (data / "data.yaml").is_file() else data
    if data.is_dir() and data_yaml == data and not ((data / "images").is_dir() and (data / "labels").is_dir()):
        raise CliError(f"{args.data}: no data.yaml and no images/ + labels/ folders (export a dataset with "
                       "'napari-cellseg export')")
    if not data_yaml.exists():
        raise CliError(f"{args.data}: no such dataset (a data.yaml, a COCO .json or an images/ + labels/ folder)")
    from .pipeline.finetune import finetune_architecture

    arch = "YOLO detection" if args.task == "detect" else finetune_architecture(args.model, args.arch)
    with tqdm(total=1, unit="batch", disable=True if args.quiet else None, file=sys.stderr) as bar:
        def on_progress(progress):
            bar.total, bar.n = progress.total, progress.done
            bar.set_description(progress.message)
            if progress.get("metrics") and not args.quiet:
                tqdm.write(f"epoch {progress.epoch}: {progress.get('losses')} {progress.get('metrics')}", file=sys.stderr)

        from .pipeline.finetune import train_any_iter

        options = FinetuneOptions.from_args(args).job_kwargs()
        if args.task != "detect":
            options["arch"] = arch
        job = train_any_iter(args.model, args.out, data_yaml=data_yaml, device=args.device, **options)
        result = run(job, on_progress)
    if result.path is None:
        raise CliError("training produced no weights")
    print(f"fine-tuned {arch} model written: {result.path} ({result.epochs_done} epochs)")
    if args.task == "detect" and result.calibration:
        val = result.calibration["val"]
        print(f"confidence {result.calibration['conf']} (best F1@0.5 {val['best_f1']:.3f} on the val split; mAP50 "
              f"{val['map50']:.3f}, mAP50-95 {val['map50_95']:.3f}), stored as the model's own")
        test = result.calibration.get("test")
        if test:
            print(f"test split at that confidence: precision {test['precision']:.3f}, recall {test['recall']:.3f}, "
                  f"F1 {test['f1']:.3f}, mAP50 {test['map50']:.3f}, count error {test['relative_count_error']:.1%}")
        return 0
    for calibration, runs in ((getattr(result, "calibration", None), ""),
                              (getattr(result, "calibration_tta", None), " for test-time augmented runs")):
        if calibration:
            print(f"score threshold{runs} {calibration['conf']} (best mean F1@0.5 "
                  f"{calibration['f1_50_by_conf'][calibration['conf']]:.3f} on {len(calibration['images'])} "
                  "validation images), stored as the model's own")
    return 0


def _student_options(args) -> dict:
    try:
        options = StudentTrainOptions.from_args(args).job_kwargs()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return {**options, "device": args.device, "init": args.init}


def _report_student(progress) -> None:
    if progress.get("record") is not None or (progress.get("phase", "train") == "teacher" and progress.done == progress.total):
        print(progress.message, flush=True)
    elif progress.done == 0 and progress.message:
        print(progress.message, flush=True)


def _finish_student(result) -> int:
    for event in result.events:
        print(f"note: {event}", file=sys.stderr)
    if result.path is None:
        raise CliError("training produced no checkpoint")
    print(f"U-Net student written: {result.path} (best validation Dice {result.best_dice:.4f}, "
          f"{result.epochs_done} epochs)")
    return 0


def _val_suffixes(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def cmd_train_unet(args) -> int:
    from .pipeline.segment import run
    from .unet_student.data import discover_dataset, load_sample
    from .unet_student.train import train_iter

    train_pairs, val_pairs = discover_dataset(args.dataset, _val_suffixes(args.val_suffixes))
    print(f"{len(train_pairs)} training and {len(val_pairs)} validation images", flush=True)
    train = [load_sample(*pair) for pair in train_pairs]
    val = [load_sample(*pair) for pair in val_pairs]
    info = {"source": "trained on masks", "dataset": str(Path(args.dataset).resolve())}
    return _finish_student(run(train_iter(train, val, args.out, info=info, **_student_options(args)),
                               _report_student))


def cmd_distill(args) -> int:
    from .backends import load_model
    from .pipeline.segment import run
    from .pipeline.distill import distill_iter, split_image_folder

    train, val = split_image_folder(args.images, _val_suffixes(args.val_suffixes))
    print(f"{len(train)} training and {len(val)} validation images; teacher {args.teacher}", flush=True)
    teacher = load_model(args.teacher, device=args.device)
    gen = distill_iter(teacher, train, val, args.out, cache_dir=args.cache, teacher_name=str(args.teacher),
                       segment_options={"conf": args.conf}, **_student_options(args))
    return _finish_student(run(gen, _report_student))


def cmd_track(args) -> int:
    from .core.io import read_image, write_csv, write_labels
    from .pipeline.segment import run
    from .core.tracking import track_iter

    path = Path(args.labels)
    labels = read_image(path, lazy=False)
    if labels.dtype.kind not in "iu":
        raise CliError(f"{path.name}: label images must hold integers, found {labels.dtype}")
    intensity = read_image(args.image, lazy=False) if args.image else None
    result = run(track_iter(labels, intensity, max_distance=args.max_distance, gap_frames=args.gap,
                            divisions=not args.no_divisions))
    out = Path(args.out)
    _check_writable(out)
    stem = path.stem[: -len("_labels")] if path.stem.endswith("_labels") else path.stem
    write_labels(out / f"{stem}_tracked.tif", result.tracked)
    write_csv(out / f"{stem}_tracks.csv", result.table)
    print(f"{path.name}: {result.n_tracks} tracks over {labels.shape[0]} frames -> {out / (stem + '_tracked.tif')}")
    return 0


def cmd_train_classifier(args) -> int:
    from .classifier.train import cross_validate_iter, load_crop_folders, train_iter
    from .core.io import write_csv
    from .pipeline.segment import run

    channels = [args.channel] if args.channel is not None else None
    try:
        train_options = ClassifierTrainOptions.from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    crops, labels, classes, tracks = load_crop_folders(args.crops, train_options.crop_size, channels)
    val = None
    if args.val:
        val_crops, val_labels, _, _ = load_crop_folders(args.val, crops.shape[-1], channels, class_names=classes)
        val = (val_crops, val_labels)
    options = {**train_options.job_kwargs(), "device": args.device}
    val_fraction = options.pop("val_fraction")

    def report(progress):
        if progress.get("train_loss") is not None:
            fold = "" if progress.get('fold') is None else f"fold {progress.get('fold') + 1}: "
            val_text = ("" if progress.get("val_accuracy") is None else
                        f"; validation (eval mode) accuracy {progress.get('val_accuracy'):.3f}, "
                        f"balanced {progress.get('val_balanced_accuracy'):.3f}")
            print(f"{fold}epoch {progress.epoch}: training loss {progress.get('train_loss'):.4f}{val_text}", flush=True)
        elif progress.done == 0 and progress.message:
            print(progress.message, flush=True)

    print(f"{len(crops)} crops of {crops.shape[1]} channel(s), {crops.shape[-1]} px; classes: {', '.join(classes)}"
          + ("; tracks from file names" if tracks is not None else ""))
    if train_options.folds:
        summary = run(cross_validate_iter(crops, labels, classes, folds=train_options.folds, tracks=tracks,
                                          **options),
                      report)
        print(f"cross-validation ({train_options.folds} folds, eval mode, held-out fold, last epoch): balanced accuracy "
              + ", ".join(f"{a:.3f}" for a in summary["fold_balanced_accuracy"])
              + f"; mean {summary['mean_balanced_accuracy']:.3f} +/- {summary['std_balanced_accuracy']:.3f} (sd)")
    result = run(train_iter(crops, labels, classes, val=val, tracks=tracks, val_fraction=val_fraction, **options),
                 report)
    out = Path(args.out)
    last = out.with_name(out.stem + "_last" + (out.suffix or ".pt"))
    extra = dict(history=result.history, notes=result.notes)
    result.classifier.save(out, best_epoch=result.best_epoch, **extra)
    result.last.save(last, best_epoch=len(result.history), **extra)
    stem = out.with_suffix("")
    write_csv(stem.with_name(stem.name + "_history.csv"),
              {k: [row.get(k, "") for row in result.history] for k in result.history[0]})
    if result.evaluation is not None:
        print(f"best epoch {result.best_epoch} of {len(result.history)} by validation balanced accuracy")
        for line in result.evaluation.report_lines():
            print(line)
        written = result.evaluation.write_csvs(stem)
        print("validation CSVs: " + ", ".join(str(p) for p in written))
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print(f"classifier written: {out} (best epoch); last epoch: {last}")
    return 0


def cmd_classify(args) -> int:
    from .classifier.model import load_classifier
    from .classifier.predict import classify_iter
    from .core.io import read_image, write_csv
    from .pipeline.segment import run

    class_names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    classifier = load_classifier(args.model, device=args.device, class_names=class_names)
    target = Path(args.target)
    out = Path(args.out)
    _check_writable(out)
    channels = [args.channel] if args.channel is not None else None
    if target.is_dir():  # loose crops, one folder per class or not
        from .classifier.predict import classify_crop_folder

        table = classify_crop_folder(target, classifier, channels)
        write_csv(out / "crops_phenotypes.csv", table)
        print(f"{len(table['file'])} crops classified -> {out / 'crops_phenotypes.csv'}")
        return 0
    if not args.labels:
        raise CliError("give --labels TRACKED.tif for an image, or a folder of crops")
    image, labels = read_image(target, lazy=False), read_image(args.labels, lazy=False)
    result = run(classify_iter(image, labels, classifier, channels=channels))
    stem = target.stem
    write_csv(out / f"{stem}_phenotypes.csv", result.rows())
    write_csv(out / f"{stem}_tracks_phenotype.csv", result.per_track())
    write_csv(out / f"{stem}_phenotype_counts.csv", result.counts_per_frame())
    print(f"{len(result.table['frame'])} cells classified -> {out / (stem + '_phenotypes.csv')}")
    return 0


def cmd_demo(args) -> int:
    """Segment a sample image with the default model and score it against its ground truth."""
    from ._sample_data import SAMPLES, load_sample

    if args.headless or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
        from .core.metrics import evaluate
        from .pipeline.segment import segment

        image, truth = load_sample(args.sample)
        result = segment(image, args.model, device=args.device)
        from ._demo import demo_summary

        row = evaluate(result.labels, truth)
        print(demo_summary(SAMPLES[args.sample], args.model, result.n_objects, result.metadata["seconds"], row))
        if args.out:
            result.save(args.out, SAMPLES[args.sample])
        return 0
    from ._demo import run_demo

    run_demo(args.sample, args.model, args.device, screenshot=args.screenshot)
    return 0


SCALE_RULE = """\
The scale (model pixels per image pixel) comes from, in this order: --zoom; --native (scale 1, tiled);
--diameter D (objects D px across shown at the model's reference diameter: --model-diameter, the
checkpoint's own, or, for a model without one, measured once in a first pass at its default scale);
otherwise the model's default: for a checkpoint from plain ultralytics its predict geometry at the
training imgsz (the image's long side fitted to imgsz, one pass, as model.predict does), for the
plugin's own checkpoints their training scale (with --diameter auto). --tile only cuts the image into
pieces: it never changes the scale. The scale used is printed after each image and stored in the
provenance file."""


BOX_COLUMNS = ("name", "n_pred", "n_gt", "precision_50", "recall_50", "f1_50", "count_error", "relative_count_error")


def _evaluate_boxes(args) -> int:
    """Box detections scored against box ground truth (issue 29): P, R, F1 at IoU 0.5, mAP50, mAP50-95, counts,
    and the confidence curves."""
    import json

    from .core.box_evaluation import evaluate_box_files
    from .core.datasets import DatasetError
    from .core.io import write_csv

    try:
        if args.model:
            if not args.data:
                raise CliError("--model needs --data (a data.yaml, its folder or a COCO .json) to evaluate on")
            from .backends import load_model
            from .pipeline.detect import evaluate_detector_iter
            from .pipeline.segment import run

            model = load_model(args.model, device=args.device)
            if model.info.task != "detect":
                raise CliError(f"{args.model}: a {model.info.task} model; --model evaluates box detectors (score a "
                               "segmentation model's label images with PRED GT)")
            evaluation = run(evaluate_detector_iter(model, args.data, split=args.split, conf=args.conf))
        else:
            if not args.pred or not (args.gt or args.data):
                raise CliError("give PRED (an _objects.csv or a folder of them) and GT (YOLO .txt labels, instance "
                               "masks, a data.yaml or a COCO .json)")
            evaluation = evaluate_box_files(Path(args.pred), Path(args.gt or args.data), conf=args.conf)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    written = []
    if args.csv:
        rows = evaluation.rows
        write_csv(args.csv, {c: [r[c] for r in rows] for c in BOX_COLUMNS})
        written = [Path(args.csv)] + evaluation.write(Path(args.csv).with_suffix(""))
    summary = evaluation.summary()
    if args.json:
        print(json.dumps({"images": evaluation.rows, "summary": summary}, indent=2, default=float))
        return 0
    print(f"{summary['n_gt']} true boxes, {summary['n_pred']} detections at confidence {summary['conf']:.3f}")
    print(f"precision {summary['precision']:.4f}  recall {summary['recall']:.4f}  F1 {summary['f1']:.4f} (IoU 0.5)")
    print(f"mAP50 {summary['map50']:.4f}  mAP50-95 {summary['map50_95']:.4f} (pycocotools)")
    print(f"best F1 {summary['best_f1']:.4f} at confidence {summary['best_f1_conf']:.3f}")
    print(f"count MAE {summary['count_mae']:.2f} per image, relative count error {summary['relative_count_error']:.2%}")
    for path in written:
        print(f"written: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="napari-cellseg", description="Cell segmentation for napari, headless.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment images (or detect boxes); writes <stem>_labels.tif (not for box "
                                         "detectors), _objects.csv, _counts.csv, _provenance.json, _instances.json",
                         epilog=SCALE_RULE, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    seg.set_defaults(func=cmd_segment)

    ev = sub.add_parser("evaluate", help="score predicted labels or boxes against ground truth (files or folders)")
    ev.add_argument("pred", nargs="?", help="predicted label image, or a folder of them; or a detection run's "
                    "<stem>_objects.csv, or a folder of them (boxes)")
    ev.add_argument("gt", nargs="?", help="ground-truth label image, or a folder matched by name; for boxes also "
                    "YOLO .txt labels, a data.yaml or a COCO .json")
    ev.add_argument("--model", default=None, help="a box detection checkpoint to run on --data and score")
    ev.add_argument("--data", default=None, help="a dataset with box labels (data.yaml of a YOLO/Roboflow export, "
                    "its folder, or a COCO .json)")
    ev.add_argument("--split", default="val", choices=["train", "val", "test"],
                    help="which split of --data to evaluate on (default val)")
    ev.add_argument("--conf", type=float, default=None,
                    help="boxes: confidence at which precision, recall, F1 and counts are reported (default: the "
                    "best-F1 one)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (with --model)")
    ev.add_argument("--csv", default="evaluation.csv", help="CSV to write (default evaluation.csv; '' for none)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="images + corrected labels -> a YOLO or COCO training set")
    ex.add_argument("images", nargs="+", help="image files (2-D or stacks: each frame becomes a sample)")
    ex.add_argument("--labels", nargs="+", required=True, help="label images, in the same order as the images")
    ex.add_argument("--format", choices=["yolo", "coco"], default="yolo")
    ex.add_argument("--out", required=True, help="dataset folder")
    ex.add_argument("--val-fraction", type=float, default=0.2, help="share of samples for validation (default 0.2)")
    ex.add_argument("--class-names", nargs="+", default=["cell"])
    ex.set_defaults(func=cmd_export)

    ft = sub.add_parser("finetune", help="fine-tune a YOLO segmentation model on an exported dataset")
    ft.add_argument("--model", default="nuclei", help="model to start from (default: the shipped nuclei model)")
    ft.add_argument("--data", required=True, help="dataset: a folder with data.yaml, the data.yaml itself, a "
                    "COCO .json (Mask R-CNN; train.json uses the val.json beside it) or an images/ + labels/ "
                    "folder (Mask R-CNN)")
    ft.add_argument("--out", required=True, help="where to write the fine-tuned model (.pt)")
    FinetuneOptions.add_arguments(ft)
    ft.add_argument("--device", default="cpu")
    ft.add_argument("-q", "--quiet", action="store_true")
    ft.set_defaults(func=cmd_finetune)

    def student_arguments(p):
        p.add_argument("--out", required=True, help="student checkpoint to write (.pt); '<stem>.last.pt' beside it")
        StudentTrainOptions.add_arguments(p)
        p.add_argument("--val-suffixes", default="09,10,19,20",
                       help="time-lapse layout: PosNNN folders whose number ends so are validation")
        p.add_argument("--init", default=None, help="start from the weights of this student checkpoint")
        p.add_argument("--device", default="cpu")

    tu = sub.add_parser("train-unet", help="train the U-Net student on images with masks")
    tu.add_argument("dataset", help="'images/' + 'labels/' folders, or '<exp>_raw_data/PosNNN' + '<exp>_masks/PosNNN'")
    student_arguments(tu)
    tu.set_defaults(func=cmd_train_unet)

    di = sub.add_parser("distill", help="distil a teacher model into the U-Net student on unlabeled images")
    di.add_argument("--teacher", required=True, help="teacher model: a name (e.g. nuclei) or a checkpoint")
    di.add_argument("--images", required=True, help="folder of images (flat, or '<exp>_raw_data/PosNNN')")
    di.add_argument("--conf", type=float, default=0.25, help="teacher confidence threshold")
    di.add_argument("--cache", default=None, help="folder for the teacher's masks (default: beside --out)")
    student_arguments(di)
    di.set_defaults(func=cmd_distill)

    tr = sub.add_parser("track", help="link per-frame instance labels (T x H x W) into tracks (laptrack)")
    tr.add_argument("labels", help="a T x H x W stack of per-frame instance labels")
    tr.add_argument("--out", default=".", help="output folder")
    tr.add_argument("--image", default=None, help="intensity stack of the same shape, for per-track intensity")
    tr.add_argument("--max-distance", type=float, default=20.0, help="largest move between frames, pixels")
    tr.add_argument("--gap", type=int, default=1, help="frames a cell may be missing and still be reconnected")
    tr.add_argument("--no-divisions", action="store_true", help="do not link daughters to their mother")
    tr.set_defaults(func=cmd_track)

    tc = sub.add_parser("train-classifier", help="train the ResNet50 phenotype classifier on crop folders")
    tc.add_argument("crops", help="folder with one sub-folder of crop images per class (track<N> in a file "
                                  "name groups a track's crops on one side of the validation split)")
    tc.add_argument("--out", required=True, help="classifier file to write (.pt): the best epoch by validation "
                                                 "balanced accuracy; <out>_last.pt, _validation.csv, "
                                                 "_confusion.csv and _history.csv beside it")
    tc.add_argument("--val", default=None, help="a separate (curated) validation folder, same classes")
    ClassifierTrainOptions.add_arguments(tc)
    tc.add_argument("--channel", type=int, default=None, help="channel of multi-channel crop files")
    tc.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    tc.set_defaults(func=cmd_train_classifier)

    cl = sub.add_parser("classify", help="classify tracked cells frame by frame, or a folder of loose crops")
    cl.add_argument("target", help="image stack (T x H x W [x C]) or a folder of crops")
    cl.add_argument("--labels", default=None, help="tracked labels (T x H x W): label value = track id")
    cl.add_argument("--model", required=True, help="classifier file (the plugin's, or a ResNet50 state dict "
                                                   "or whole model with a 1-channel first convolution)")
    cl.add_argument("--class-names", default=None,
                    help="comma-separated class names in the model's output order (foreign weights; default "
                         "for 8 outputs: the seed's order Nuclear,Aggregate,Cytoplasm,Triple,BinaryAggregate,"
                         "Fragmented,Circular,Senescent)")
    cl.add_argument("--channel", type=int, default=None, help="channel of a multi-channel image")
    cl.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    cl.add_argument("--out", default=".", help="output folder")
    cl.set_defaults(func=cmd_classify)

    demo = sub.add_parser("demo", help="open napari on a sample image, segment it and score it")
    demo.add_argument("--sample", default="dense", choices=["dense", "small", "large"])
    demo.add_argument("--model", default="nuclei", help="model name or path (default: the shipped nuclei model)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--headless", action="store_true", help="no window: print counts and metrics")
    demo.add_argument("--out", default=None, help="(headless) also write the outputs here")
    demo.add_argument("--screenshot", default=None, metavar="PATH",
                      help="(in a window) save a picture of the whole window after the run, then exit")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .core.backend import ModelLoadError
    from .classifier.model import ClassifierLoadError
    from .core.io import ImageReadError
    from .core.normalize import ImageInputError

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


if __name__ == "__main__":
    sys.exit(main())
