"""U-Net student backend (see napari_cellseg.unet_student).

A student checkpoint is a plain ``torch.save`` dict of tensors and numbers, marked by the
top-level key ``napari_cellseg_unet``; it loads with ``weights_only=True`` (no code runs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.io import sha256_of
from ..core.tiling import TileDetections
from ..core.backend import InferenceSettings, ModelInfo, ModelLoadError, checkpoint_pickle

NAME = "unet"
MARKER = b"napari_cellseg_unet"


def probe(path: Path) -> bool:
    """True for a torch zip checkpoint whose pickle holds the student's marker key (not unpickled)."""
    data = checkpoint_pickle(path)
    return data is not None and MARKER in data


def load(path: Path, device: str = "auto") -> "UNetBackend":
    return UNetBackend(path, device)


def _refinement(settings: dict | None, path: Path):
    from ..core.refine import ContourRefinement

    if not settings:
        return None
    known = ContourRefinement.__dataclass_fields__
    try:
        return ContourRefinement(**{k: v for k, v in settings.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: invalid contour refinement settings {settings} ({exc})") from exc


class UNetBackend:
    """A trained U-Net student; instances by seeded watershed on its foreground/boundary/distance maps."""

    def __init__(self, path: str | Path, device: str = "auto", engine: str | None = None):
        from ..core import onnx_cache

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        if not probe(path):
            from ..core.backend import describe_file

            raise ModelLoadError(f"{path}: {describe_file(path)}; expected a napari-cellseg U-Net student checkpoint")
        sha256 = sha256_of(path)
        self.engine, self.engine_note, self._session, self._model = "torch", None, None, None
        resolved = onnx_cache.resolve_device_lazily(device)  # an unavailable device is an error here
        try:
            onnx_wanted = onnx_cache.use_onnx(engine, resolved)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from exc
        if onnx_wanted:  # the cached export needs no torch
            from . import onnx_engine

            cached = onnx_engine.load_cached(path, sha256)
            if cached is not None:
                session, meta = cached
                self._configure(meta["checkpoint"], path, sha256)
                self._session, self.device = session, "cpu"
                self.engine = "onnx-int8" if meta.get("int8") else "onnx"
                return
        from .model import CHECKPOINT_KEY, for_inference, load_checkpoint, model_from_checkpoint

        self.device = resolved
        try:
            ckpt = load_checkpoint(path)
            meta = ckpt[CHECKPOINT_KEY]
            model = model_from_checkpoint(ckpt)
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot load the U-Net student ({type(exc).__name__}: {exc})") from exc
        self._configure(meta, path, sha256)
        if onnx_wanted:
            from . import onnx_engine

            try:
                self._session, exported = onnx_engine.export(ckpt, path, sha256, onnx_engine.checkpoint_record(meta))
                self.engine = "onnx-int8" if exported.get("int8") else "onnx"
                return
            except Exception as exc:  # noqa: BLE001 - torch is the fallback
                if onnx_cache.default_engine(engine) == "onnx":
                    raise ModelLoadError(f"{path}: ONNX export failed ({type(exc).__name__}: {exc})") from exc
                self.engine_note = onnx_cache.fallback_warning(str(path), exc)
        self._model = for_inference(model).to(self.device)

    def _configure(self, meta: dict, path: Path, sha256: str) -> None:
        """Settings and information from the checkpoint's metadata (or its copy in a cached export)."""
        from .targets import PostProcess

        known = PostProcess.__dataclass_fields__
        self.postprocess = PostProcess(**{k: v for k, v in (meta.get("postprocess") or {}).items() if k in known})
        # contour refinement settings chosen for this network (core.refine); None: the defaults
        self.refinement = _refinement(meta.get("refinement"), path)
        info = meta.get("info") or {}
        training = meta.get("training") or {}
        self.info = ModelInfo(
            backend=NAME,
            path=str(path.resolve()),
            sha256=sha256,
            task="segment",
            class_names={0: str(info.get("class_name", "cell"))},
            train_imgsz=int(meta.get("tile", 768)),
            zoom=float(meta.get("zoom", 1.0)),
            extra={"widths": list(meta.get("widths", [])), "teacher": info.get("teacher"),
                   "best_val_dice": training.get("best_dice"), "epochs": training.get("epoch")},
        )

    def _probabilities(self, tile: np.ndarray) -> np.ndarray:
        if self._session is not None:
            from .model import STRIDE
            from .onnx_engine import predict_probabilities as onnx_probabilities

            return onnx_probabilities(self._session, tile, STRIDE)
        from .model import predict_probabilities

        return predict_probabilities(self._model, tile, self.device)

    def probabilities(self, tile: np.ndarray, augmented: bool = False) -> np.ndarray:
        """(3, H, W) foreground, boundary and distance maps of an (H, W, 3) uint8 tile; ``augmented``:
        the mean of the maps of the tile as is and flipped left-right, up-down and both."""
        if not augmented:
            return self._probabilities(tile)
        from ..core.fusion import FLIPS

        maps = [np.flip(self._probabilities(np.ascontiguousarray(np.flip(tile, axes))),
                        tuple(a + 1 for a in axes)) for axes in FLIPS.values()]
        return np.mean(maps, axis=0)

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        return self._instances(tile, settings, augmented=False)

    def predict_tile_augmented(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        """Test-time augmentation: the probability maps of the four flips averaged, then one watershed
        (instances of separate runs need no matching)."""
        return self._instances(tile, settings, augmented=True)

    def _instances(self, tile: np.ndarray, settings: InferenceSettings, augmented: bool) -> TileDetections:
        import cv2
        from scipy import ndimage

        from .targets import instances_from_predictions

        h, w = tile.shape[:2]
        zh, zw = max(1, round(h * settings.zoom)), max(1, round(w * settings.zoom))
        net = tile if (zh, zw) == (h, w) else cv2.resize(tile, (zw, zh), interpolation=cv2.INTER_LINEAR)
        fg, boundary, distance = self.probabilities(net, augmented=augmented)
        labels = instances_from_predictions(fg, boundary, distance, self.postprocess)
        if (zh, zw) != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
        n = int(labels.max())
        if n == 0:
            return TileDetections.empty((h, w))
        ids = np.arange(1, n + 1)
        scores = np.asarray(ndimage.mean(fg, labels, ids), np.float32)
        keep = ids[scores >= settings.conf][: settings.max_det]
        if len(keep) == 0:
            return TileDetections.empty((h, w))
        objects = ndimage.find_objects(labels)
        masks = np.zeros((len(keep), h, w), bool)
        boxes = np.zeros((len(keep), 4))
        for i, label in enumerate(keep):
            sl = objects[label - 1]
            masks[i][sl] = labels[sl] == label
            boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        return TileDetections(masks=masks, scores=scores[keep - 1], class_ids=np.zeros(len(keep), np.int64),
                              boxes=boxes)
