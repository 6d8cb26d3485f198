"""The U-Net student on ONNX Runtime: exported once with ``torch.onnx.export``, cached by
``core.onnx_cache``, run without torch.

The exported graph ends in the sigmoid, so it returns the (B, 3, H, W) probabilities that
``model.predict_probabilities`` returns; the input is padded the same way (reflection to the stride).
The checkpoint's settings (post-processing, contour refinement, tile, zoom, class name) travel in the
file's metadata, so a cached export loads without torch.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..core import onnx_cache

TAG = "unet"
RECIPE = 1  # bump when the export or the metadata changes: older cache files are then ignored
OPSET = 17


def load_cached(path: Path, sha256: str):
    return onnx_cache.open_cached(path, sha256, TAG, RECIPE)


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
    target = onnx_cache.writable_target(path, sha256, TAG)
    with tempfile.TemporaryDirectory(prefix="napari-cellseg-export-") as work:
        raw = Path(work) / "unet.onnx"
        axes = {0: "batch", 2: "height", 3: "width"}
        with torch.inference_mode():
            torch.onnx.export(net, torch.zeros(1, 3, 64, 64), str(raw), input_names=["image"],
                              output_names=["probabilities"], dynamic_axes={"image": axes, "probabilities": axes},
                              opset_version=OPSET, dynamo=False)
        meta = {"source_sha256": sha256, "recipe": RECIPE, "source": path.name, "checkpoint": record,
                "torch_version": torch.__version__}
        onnx_cache.save_with_metadata(raw, target, meta)
    return onnx_cache.make_session(target), meta


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
