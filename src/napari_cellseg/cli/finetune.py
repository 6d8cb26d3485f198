"""``napari-cellseg finetune``: fine-tune a YOLO (or Mask R-CNN) model, or train a YOLO box detector."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.options import FinetuneOptions
from ._common import CliError


def add_parser(sub):
    ft = sub.add_parser("finetune", help="fine-tune a YOLO segmentation model on an exported dataset")
    ft.add_argument("--model", default="nuclei", help="model to start from (default: the shipped nuclei model)")
    ft.add_argument("--data", required=True, help="dataset: a folder with data.yaml, the data.yaml itself, a "
                    "COCO .json (Mask R-CNN; train.json uses the val.json beside it) or an images/ + labels/ "
                    "folder (Mask R-CNN)")
    ft.add_argument("--out", required=True, help="where to write the fine-tuned model (.pt)")
    FinetuneOptions.add_arguments(ft)
    ft.add_argument("--device", default="cpu")
    ft.add_argument("-q", "--quiet", action="store_true")
    return ft


def run(args) -> int:
    from tqdm import tqdm

    from ..pipeline.finetune import finetune_architecture, train_any_iter
    from ..pipeline.segment import run as run_job

    data = Path(args.data)
    data_yaml = data / "data.yaml" if data.is_dir() and (data / "data.yaml").is_file() else data
    if data.is_dir() and data_yaml == data and not ((data / "images").is_dir() and (data / "labels").is_dir()):
        raise CliError(f"{args.data}: no data.yaml and no images/ + labels/ folders (export a dataset with "
                       "'napari-cellseg export')")
    if not data_yaml.exists():
        raise CliError(f"{args.data}: no such dataset (a data.yaml, a COCO .json or an images/ + labels/ folder)")
    arch = "YOLO detection" if args.task == "detect" else finetune_architecture(args.model, args.arch)
    with tqdm(total=1, unit="batch", disable=True if args.quiet else None, file=sys.stderr) as bar:
        def on_progress(progress):
            bar.total, bar.n = progress.total, progress.done
            bar.set_description(progress.message)
            if progress.get("metrics") and not args.quiet:
                tqdm.write(f"epoch {progress.epoch}: {progress.get('losses')} {progress.get('metrics')}", file=sys.stderr)

        options = FinetuneOptions.from_args(args).job_kwargs()
        if args.task != "detect":
            options["arch"] = arch
        job = train_any_iter(args.model, args.out, data_yaml=data_yaml, device=args.device, **options)
        result = run_job(job, on_progress)
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
