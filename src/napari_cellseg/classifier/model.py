"""The ResNet50 phenotype classifier: build, load (safely), save, predict.

Checkpoints are plain dicts of tensors and strings, loaded with ``weights_only=True``:
``{"format": FORMAT, "state_dict", "class_names", "in_channels", "crop_size", "crop_mode"}``.
Foreign weights load too: a bare torchvision ResNet50 state dict (or one under
``state_dict``/``model_state_dict``), or a whole pickled torchvision ResNet50 (``torch.save(model)``,
as the seed's code saved it; unpickled with only torchvision's ResNet classes allowed). Their
first convolution is averaged over its input channels when the model expects fewer; the class
count comes from the final layer, the class names from ``class_names`` or, for 8 outputs, the
seed's documented order ``DEFAULT_CLASSES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "napari-cellseg/resnet50-classifier/1"
DEFAULT_CLASSES = ("Nuclear", "Aggregate", "Cytoplasm", "Triple", "BinaryAggregate", "Fragmented", "Circular",
                   "Senescent")
DEFAULT_CROP = 40
SEED_CROP_MODE = "resize"  # each cell's box resized to the crop size (see crops.py)


class ClassifierLoadError(ValueError):
    pass


def build_resnet50(n_classes: int, in_channels: int = 1):
    import torch
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=n_classes)
    if in_channels != 3:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def adapt_first_conv(weight, in_channels: int):
    """Average a (64, 3, 7, 7) first convolution to ``in_channels`` inputs (the seed's recipe)."""
    if weight.shape[1] == in_channels:
        return weight
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)


@dataclass
class Classifier:
    model: object  # torch.nn.Module
    class_names: list[str]
    in_channels: int
    crop_size: int
    device: str = "cpu"
    path: str | None = None
    sha256: str | None = None
    crop_mode: str = SEED_CROP_MODE

    def predict(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, C, H, W) or (N, H, W) float crops in [0, 1] -> (N, n_classes) probabilities."""
        import torch

        crops = np.asarray(crops, np.float32)
        if crops.ndim == 3:
            crops = crops[:, None]
        if crops.shape[1] != self.in_channels:
            raise ValueError(f"the classifier takes {self.in_channels} channel(s), the crops have {crops.shape[1]}")
        if len(crops) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        model = self._model_for(crops.shape[2:])
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                batch = torch.from_numpy(crops[start:start + batch_size]).to(self.device)
                batch = batch.contiguous(memory_format=torch.channels_last)
                out.append(torch.softmax(model(batch), dim=1).cpu().numpy())
        return np.concatenate(out)

    def _model_for(self, crop_hw):
        """The model in eval mode; on the CPU, a cached faster equivalent (see ``fast.py``)."""
        self.model.eval()
        if str(self.device) != "cpu":
            return self.model
        from .fast import inference_model, weights_version

        key = (id(self.model), weights_version(self.model), tuple(crop_hw))
        if getattr(self, "_fast_key", None) != key:
            self._fast_model = inference_model(self.model, self.in_channels, tuple(crop_hw))
            self._fast_key = key
        return self._fast_model

    def save(self, path: str | Path, **extra) -> None:
        import torch

        from ..core.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "state_dict": self.model.state_dict(), "class_names": list(self.class_names),
                        "in_channels": self.in_channels, "crop_size": self.crop_size, "crop_mode": self.crop_mode,
                        **extra}, tmp)


def _state_dict_of(checkpoint) -> dict:
    if hasattr(checkpoint, "state_dict") and callable(checkpoint.state_dict):  # a whole model
        return checkpoint.state_dict()
    if not isinstance(checkpoint, dict):
        raise ClassifierLoadError("expected a state dict or a checkpoint dict")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def _resnet_safe_globals() -> list:
    """The classes a pickled torchvision ResNet50 is made of: all ``torch.load`` may build."""
    import torch
    from torchvision.models import resnet

    nn = torch.nn
    return [resnet.ResNet, resnet.Bottleneck, resnet.BasicBlock, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
            nn.AdaptiveAvgPool2d, nn.Linear, nn.Sequential, nn.Identity, nn.Dropout, set]


def _load_weights_only(path: Path):
    """``torch.load(weights_only=True)``; a whole pickled ResNet is allowed only its own classes."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # no code runs from the file
    except pickle.UnpicklingError as exc:
        if "torchvision.models.resnet" not in str(exc) and "torch.nn.modules" not in str(exc):
            raise
    with torch.serialization.safe_globals(_resnet_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_classifier(path: str | Path, device: str = "cpu", in_channels: int | None = None,
                    class_names: list[str] | None = None) -> Classifier:
    from ..core.backend import resolve_device
    from ..core.io import sha256_of

    device = resolve_device(device)
    path = Path(path)
    if not path.is_file():
        raise ClassifierLoadError(f"{path}: no such classifier file")
    try:
        checkpoint = _load_weights_only(path)
    except Exception as exc:
        raise ClassifierLoadError(
            f"{path}: not a plain PyTorch state dict or checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    state = {k.removeprefix("module."): v for k, v in _state_dict_of(checkpoint).items()}
    if "fc.weight" not in state or "conv1.weight" not in state:
        raise ClassifierLoadError(f"{path}: not a ResNet classifier (no conv1/fc weights; keys like "
                                  f"{', '.join(list(state)[:5])})")
    n_classes = int(state["fc.weight"].shape[0])
    ours = isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT
    in_channels = int(in_channels or (checkpoint["in_channels"] if ours else 1))
    if isinstance(class_names, str):
        class_names = [n.strip() for n in class_names.split(",") if n.strip()]
    names = list(class_names or (checkpoint.get("class_names") if ours else None)
                 or (DEFAULT_CLASSES if n_classes == len(DEFAULT_CLASSES) else [f"class_{i}" for i in range(n_classes)]))
    if len(names) != n_classes:
        raise ClassifierLoadError(f"{path}: {n_classes} outputs but {len(names)} class names")
    state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], in_channels)
    model = build_resnet50(n_classes, in_channels)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                  if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        def listing(items):
            return (", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")) or "none"

        raise ClassifierLoadError(
            f"{path}: the weights do not fit a ResNet50; missing: {listing(missing)}; "
            f"unexpected: {listing(unexpected)}; wrong shape: {listing(mismatched)}"
        )
    model.load_state_dict(state)
    crop = int(checkpoint.get("crop_size", DEFAULT_CROP)) if ours else DEFAULT_CROP
    # plugin checkpoints from before crop_mode cut fixed windows; foreign weights follow the seed
    crop_mode = str(checkpoint.get("crop_mode", "window")) if ours else SEED_CROP_MODE
    return Classifier(model.to(device).eval(), names, in_channels, crop, device, str(path.resolve()),
                      sha256_of(path), crop_mode)
