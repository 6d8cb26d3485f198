"""``napari-cellseg evaluate``: predicted labels or boxes scored against ground truth."""
from __future__ import annotations

from pathlib import Path

from ._common import CliError

BOX_COLUMNS = ("name", "n_pred", "n_gt", "precision_50", "recall_50", "f1_50", "count_error", "relative_count_error")


def add_parser(sub):
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
    return ev


def run(args) -> int:
    import json

    from ..core.box_evaluation import is_box_prediction

    if args.model or args.data or (args.pred and is_box_prediction(Path(args.pred))):
        return _evaluate_boxes(args)
    if not args.pred or not args.gt:
        raise CliError("give PRED and GT (label images or folders), or --model and --data for a box detector")
    from ..core.evaluation import SUMMARY_COLUMNS, evaluate_files, summary_row
    from ..core.io import write_csv

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


def _evaluate_boxes(args) -> int:
    """Box detections scored against box ground truth (issue 29): P, R, F1 at IoU 0.5, mAP50, mAP50-95, counts,
    and the confidence curves."""
    import json

    from ..core.box_evaluation import evaluate_box_files
    from ..core.datasets import DatasetError
    from ..core.io import write_csv

    try:
        if args.model:
            if not args.data:
                raise CliError("--model needs --data (a data.yaml, its folder or a COCO .json) to evaluate on")
            from ..backends import load_model
            from ..pipeline.detect import evaluate_detector_iter
            from ..pipeline.segment import run as run_job

            model = load_model(args.model, device=args.device)
            if model.info.task != "detect":
                raise CliError(f"{args.model}: a {model.info.task} model; --model evaluates box detectors (score a "
                               "segmentation model's label images with PRED GT)")
            evaluation = run_job(evaluate_detector_iter(model, args.data, split=args.split, conf=args.conf))
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
