"""``napari-cellseg export-onnx``: a box detector's .pt as an .onnx that keeps its zoom, calibrated conf and
reference object size (yolo/export_onnx.py)."""
from __future__ import annotations

from ._common import CliError


def add_parser(sub):
    ex = sub.add_parser("export-onnx", help="a box detector (.pt) -> ONNX, keeping its zoom and calibrated conf")
    ex.add_argument("model", help="an ultralytics box detector checkpoint (.pt), e.g. one 'finetune --task detect' "
                                  "wrote")
    ex.add_argument("--out", default=None, help="the .onnx to write (default: <model stem>.onnx beside the model)")
    shape = ex.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", dest="dynamic", action="store_true", default=True,
                       help="any input side: each tile padded to the stride only, as the .pt is fed (default)")
    shape.add_argument("--fixed", dest="dynamic", action="store_false",
                       help="a fixed (1, 3, imgsz, imgsz) input")
    ex.add_argument("--imgsz", type=int, default=None,
                    help="network input size of the export (default: the checkpoint's training size)")
    return ex


def run(args) -> int:
    from ..core.backend import ModelLoadError
    from ..yolo.export_onnx import CALIBRATION_KEY, export_detector_onnx

    if args.imgsz is not None and args.imgsz <= 0:
        raise CliError(f"--imgsz must be positive (got {args.imgsz})")
    try:
        path, calibration = export_detector_onnx(args.model, args.out, dynamic=args.dynamic, imgsz=args.imgsz)
    except (ModelLoadError, ValueError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    diameter = calibration["object_diameter"]
    print(f"ONNX detector written: {path} ({'dynamic' if args.dynamic else 'fixed'} input)")
    print(f"carried in its {CALIBRATION_KEY} entry: zoom {calibration['zoom']:g}, conf {calibration['conf']:g}, "
          f"object diameter {'none' if diameter is None else f'{diameter:g} px'} "
          f"(from {args.model}, sha256 {calibration['source_sha256'][:12]}...)")
    return 0
