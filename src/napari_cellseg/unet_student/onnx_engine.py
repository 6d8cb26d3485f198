"""The U-Net student on ONNX Runtime: exported once with ``torch.onnx.export``, cached by
``core.onnx_cache``, run without torch.

The exported graph ends in the sigmoid, so it returns the (B, 3, H, W) probabilities that
``model.predict_probabilities`` returns; the input is padded the same way (reflection to the stride).
The checkpoint's settings (post-processing, contour refinement, tile, zoom, class name) travel in the
file's metadata, so a cached export loads without torch.

By default the cached network is quantised to 8 bits (ONNX Runtime's static QDQ quantisation: int8
weights per output channel, uint8 activations whose ranges are the minimum and maximum seen on the
package's three sample images, ``sample_data/``, pixels only), about 2-3x faster than float32 on two
cores; on the 13 520x696 fluorescence validation images the pipeline's DSB score moved from 0.7367
to 0.7364 and F1@0.5 from 0.9489 to 0.9495 (docs/benchmarks.md). ``NAPARI_CELLSEG_INT8=0`` keeps
float32 (the same maps as torch to about 1e-6).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..core import onnx_cache

TAG = "unet"
RECIPE = 2  # bump when the export or the metadata changes: older cache files are then ignored
OPSET = 17


INT8_ENV = "NAPARI_CELLSEG_INT8"
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


def int8_wanted() -> bool:
    return os.environ.get(INT8_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _tag() -> str:
    return f"{TAG}-int8" if int8_wanted() else TAG


def load_cached(path: Path, sha256: str):
    return onnx_cache.open_cached(path, sha256, _tag(), RECIPE)


def checkpoint_record(meta: dict) -> dict:
    """What the backend reads of a checkpoint's metadata, as JSON (the training history left out)."""
    keep = {k: v for k, v in meta.items() if k not in ("history", "training")}
    training = meta.get("training") or {}
    keep["training"] = {k: training.get(k) for k in ("best_dice", "epoch")}
    return json.loads(json.dumps(keep, default=str))


def export(ckpt: dict, path: Path, sha256: str, record: dict):
    """torch.onnx.export of the checkpoint's network (sigmoid included), dynamic batch and sides."""
    import torch

    from .model import model_from_checkpoint

    class Probabilities(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.sigmoid(self.net(x))

    net = Probabilities(model_from_checkpoint(ckpt).eval())
    target = onnx_cache.writable_target(path, sha256, _tag())
    with tempfile.TemporaryDirectory(prefix="napari-cellseg-export-") as work:
        raw = Path(work) / "unet.onnx"
        axes = {0: "batch", 2: "height", 3: "width"}
        with torch.inference_mode():
            torch.onnx.export(net, torch.zeros(1, 3, 64, 64), str(raw), input_names=["image"],
                              output_names=["probabilities"], dynamic_axes={"image": axes, "probabilities": axes},
                              opset_version=OPSET, dynamo=False)
        meta = {"source_sha256": sha256, "recipe": RECIPE, "source": path.name, "checkpoint": record,
                "torch_version": torch.__version__, "int8": int8_wanted()}
        if int8_wanted():
            quantized = Path(work) / "unet-int8.onnx"
            meta["calibration"] = quantize(raw, quantized, Path(work))
            raw = quantized
        onnx_cache.save_with_metadata(raw, target, meta)
    return onnx_cache.make_session(target), meta


def calibration_inputs(stride: int = 16) -> list[np.ndarray]:
    """The network inputs of the package's sample images, normalised as the pipeline normalises a frame."""
    from ..core.io import read_image
    from ..core.normalize import model_rgb, to_stack_of_frames

    inputs = []
    for image_path in sorted(SAMPLE_DATA.glob("*.png")):
        if image_path.stem.endswith("_labels"):
            continue
        rgb = model_rgb(np.asarray(to_stack_of_frames(read_image(image_path))[0]))
        h, w = rgb.shape[:2]
        ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
        x = np.pad(rgb.astype(np.float32) / 255.0, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect")
        inputs.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    if not inputs:
        raise FileNotFoundError(f"no sample images in {SAMPLE_DATA} to calibrate the 8-bit network on")
    return inputs


def quantize(raw: Path, out: Path, work: Path) -> dict:
    """Static QDQ quantisation of ``raw`` into ``out``: int8 weights per channel, uint8 activations with
    min-max ranges from ``calibration_inputs()``. Returns what was done, for the metadata."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    inputs = calibration_inputs()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter([{"image": x} for x in inputs])

        def get_next(self):
            return next(self._items, None)

    prepared = work / "unet-prepared.onnx"
    quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    return {"method": "static QDQ, MinMax", "weights": "int8 per channel", "activations": "uint8",
            "images": [p.name for p in sorted(SAMPLE_DATA.glob("*.png")) if not p.stem.endswith("_labels")]}


def predict_probabilities(session, image: np.ndarray, stride: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 probabilities, padded as ``model.predict_probabilities``."""
    h, w = image.shape[:2]
    ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
    x = image.astype(np.float32) / 255.0
    if (ph, pw) != (h, w):
        mode = "reflect" if h > 1 and w > 1 and ph - h < h and pw - w < w else "edge"
        x = np.pad(x, ((0, ph - h), (0, pw - w), (0, 0)), mode=mode)
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return np.ascontiguousarray(out[0, :, :h, :w], dtype=np.float32)
