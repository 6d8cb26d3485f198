"""``napari-cellseg train-classifier``: train the ResNet50 phenotype classifier on crop folders."""
from __future__ import annotations

from ..core.options import ClassifierTrainOptions
from ._common import options_from_args


def add_parser(sub):
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
    return tc


def _report(progress) -> None:
    if progress.get("train_loss") is not None:
        fold = "" if progress.get('fold') is None else f"fold {progress.get('fold') + 1}: "
        val_text = ("" if progress.get("val_accuracy") is None else
                    f"; validation (eval mode) accuracy {progress.get('val_accuracy'):.3f}, "
                    f"balanced {progress.get('val_balanced_accuracy'):.3f}")
        print(f"{fold}epoch {progress.epoch}: training loss {progress.get('train_loss'):.4f}{val_text}", flush=True)
    elif progress.done == 0 and progress.message:
        print(progress.message, flush=True)


def run(args) -> int:
    from ..classifier.train import cross_validate_iter, load_crop_folders, train_iter
    from ..pipeline.segment import run as run_job

    channels = [args.channel] if args.channel is not None else None
    train_options = options_from_args(ClassifierTrainOptions, args)
    crops, labels, classes, tracks = load_crop_folders(args.crops, train_options.crop_size, channels)
    val = None
    if args.val:
        val_crops, val_labels, _, _ = load_crop_folders(args.val, crops.shape[-1], channels, class_names=classes)
        val = (val_crops, val_labels)
    options = {**train_options.job_kwargs(), "device": args.device}
    val_fraction = options.pop("val_fraction")

    print(f"{len(crops)} crops of {crops.shape[1]} channel(s), {crops.shape[-1]} px; classes: {', '.join(classes)}"
          + ("; tracks from file names" if tracks is not None else ""))
    if train_options.folds:
        summary = run_job(cross_validate_iter(crops, labels, classes, folds=train_options.folds, tracks=tracks,
                                              **options),
                          _report)
        print(f"cross-validation ({train_options.folds} folds, eval mode, held-out fold, last epoch): balanced accuracy "
              + ", ".join(f"{a:.3f}" for a in summary["fold_balanced_accuracy"])
              + f"; mean {summary['mean_balanced_accuracy']:.3f} +/- {summary['std_balanced_accuracy']:.3f} (sd)")
    result = run_job(train_iter(crops, labels, classes, val=val, tracks=tracks, val_fraction=val_fraction, **options),
                     _report)
    written = result.save(args.out)
    if result.evaluation is not None:
        print(f"best epoch {result.best_epoch} of {len(result.history)} by validation balanced accuracy")
        for line in result.evaluation.report_lines():
            print(line)
        print("validation CSVs: " + ", ".join(str(p) for p in written["validation"]))
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print(f"classifier written: {written['best']} (best epoch); last epoch: {written['last']}")
    return 0
