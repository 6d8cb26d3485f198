"""Mask R-CNN (ResNet-50-FPN / ResNeXt-101-32x8d-FPN) on torchvision, for torchvision and detectron2 checkpoints.

detectron2 checkpoints (``model_final.pth`` or the model-zoo ``.pkl``) are converted by name
(:mod:`.convert`) into torchvision's modules and run with detectron2's own inference
arithmetic (:mod:`.detectron2_inference`: PIL resize of the uint8 frame, BGR 0..255 minus the
checkpoint's pixel mean/std, unrounded anchors, per-level RPN top-k, ROIAlignV2, class-specific
boxes, per-class NMS, detectron2's mask pasting); on the shared detectron2 fixture this gives
DefaultPredictor's detections within float32 noise. Settings come from the ``config.yaml`` beside
the checkpoint, or detectron2's defaults (noted in ``info.extra['notes']``, logged, and in ``info.notes``,
which every run's warnings carry). detectron2 checkpoints ask the pipeline for the frame as given and
whole (``ModelInfo.wants_raw_uint8``, ``wants_whole_frame``), as DefaultPredictor is fed.
torchvision checkpoints keep torchvision's own heads.

Loading never runs code from the file: ``.pth`` files load with ``weights_only``; other pickles
(detectron2's ``.pkl``, or checkpoints that carry trainer state) go through an unpickler that only
rebuilds tensors, arrays and plain containers and replaces any other object by an inert stub.
"""
from __future__ import annotations

import logging
import mmap
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..core.io import sha256_of
from ..core.tiling import TileDetections
from ..core.backend import InferenceSettings, ModelInfo, ModelLoadError, checkpoint_pickle, resolve_device
from .detectron2_inference import Detectron2Inference
from .convert import (
    IMAGENET_MEAN_255, IMAGENET_STD_255, MaskRCNNConfig, config_contradictions, config_from_detectron2,
    convert_detectron2_state, detectron2_architecture, is_caffe2_state, is_detectron2_state, load_weights_strict,
    read_config_yaml,
)

NAME = "maskrcnn"
NORMALIZATIONS = ("model", "imagenet", "image")
log = logging.getLogger(__name__)

_MARKERS = (b"proposal_generator.rpn_head", b"backbone.bottom_up.", b"rpn.head.cls_logits", b"backbone.body.")


def probe(path: Path) -> bool:
    """A torch checkpoint or plain pickle whose names are those of a Mask R-CNN (detectron2 or torchvision)."""
    if path is None:
        return False
    try:
        if zipfile.is_zipfile(path):
            data = checkpoint_pickle(path) or b""
            return b"ultralytics" not in data and b"roi_heads" in data and any(m in data for m in _MARKERS)
        with open(path, "rb") as fh:
            if fh.read(1) != b"\x80":
                return False
            # a plain pickle stores names next to their arrays: the first key's array (e.g. a 1 MB
            # fpn_lateral5 weight in fp16) can push every marker past any fixed-size head
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return any(data.find(m) >= 0 for m in _MARKERS)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def load(path: Path, device: str = "auto", **kwargs) -> "MaskRCNNBackend":
    return MaskRCNNBackend(path, device, **kwargs)


# ---------------------------------------------------------------- safe reading


class _Stub:
    """Stands in for any object a checkpoint pickles besides tensors and arrays (trainer state)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()


_SAFE = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("torch", "Size"),
    ("torch", "device"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE or module == "numpy.dtypes" or (
                module == "torch._utils" and name.startswith("_rebuild")) or (
                module == "torch" and (name.endswith("Storage") or name in ("float32", "float16", "bfloat16"))):
            return super().find_class(module, name)
        return _Stub


class _SafePickleModule:
    """A pickle module for ``torch.load`` that never imports classes it does not know."""

    Unpickler = _SafeUnpickler
    load = staticmethod(lambda fh, **kw: _SafeUnpickler(fh, **kw).load())


def read_checkpoint(path: Path) -> dict:
    """The checkpoint as a dict (tensors or arrays), without running code from the file."""
    import torch

    try:
        if zipfile.is_zipfile(path):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:  # trainer or scheduler objects beside the weights
                return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_SafePickleModule)
        with open(path, "rb") as fh:
            head = fh.read(2)
            if head == b"PK":  # a torch zip checkpoint whose directory at the end is missing
                raise ModelLoadError(f"{path}: a truncated or corrupted PyTorch checkpoint "
                                     f"({path.stat().st_size:,} bytes, no zip directory at its end)")
            if head == b"\x80\x02" and path.suffix.lower() != ".pkl":  # legacy torch.save format
                return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_SafePickleModule)
            fh.seek(0)
            return _SafeUnpickler(fh, encoding="latin1").load()
    except ModelLoadError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line
        raise ModelLoadError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {reason}); "
                             "the file may be truncated") from exc


def _state_dict_of(checkpoint) -> dict:
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
        if any(isinstance(k, str) and "." in k for k in checkpoint):
            return checkpoint
    return {}


def checkpoint_to_torchvision(path: Path, checkpoint: dict | None = None) -> tuple[dict, list[str], MaskRCNNConfig]:
    """(torchvision state dict, unmapped source keys, settings) for any supported checkpoint."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    state = {str(k).removeprefix("module."): v for k, v in _state_dict_of(checkpoint).items()}
    ours = checkpoint.get("napari_cellseg") if isinstance(checkpoint, dict) else None
    if isinstance(ours, dict) and isinstance(ours.get("maskrcnn_config"), dict):  # fine-tuned here
        config = MaskRCNNConfig.from_dict(ours["maskrcnn_config"])
        if "input_range" not in ours["maskrcnn_config"]:  # written before the key: trained on stretched frames
            config.input_range = "percentiles"
        config.notes_are_history = True  # its notes tell how it was trained, not what loading found
        if is_detectron2_state(state):  # fine-tuned here and written in detectron2's layout
            converted, unmapped = convert_detectron2_state(state, config.num_classes)
            return converted, unmapped, config
        return state, [], config
    if is_detectron2_state(state):
        try:
            arch = detectron2_architecture(state)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        config_path = Path(path).parent / "config.yaml"
        contradictions = []
        if config_path.is_file():
            cfg = read_config_yaml(config_path)
            config = config_from_detectron2(cfg, str(config_path))
            contradictions = config_contradictions(cfg, state)
        else:
            config = config_from_detectron2(None)
            if arch["groups"] > 1:  # FB/Caffe2 ResNeXt ImageNet models: other strides and std
                from .convert import D2_PIXEL_STD_FB

                config.stride_in_1x1, config.pixel_std = False, D2_PIXEL_STD_FB
                config.notes.append("ResNeXt without config.yaml: STRIDE_IN_1X1 False and PIXEL_STD "
                                    f"{list(D2_PIXEL_STD_FB)} (detectron2's X-101-32x8d configs)")
        mismatch = [f"{k} {getattr(config, k)} in config.yaml vs {v} in the weights"
                    for k, v in arch.items() if getattr(config, k) != v and config_path.is_file()] + contradictions
        if mismatch:
            raise ModelLoadError(f"{path}: config.yaml does not describe these weights: " + "; ".join(mismatch))
        for key, value in arch.items():
            setattr(config, key, value)
        converted, unmapped = convert_detectron2_state(state, config.num_classes)
        return converted, unmapped, config
    if is_caffe2_state(state):
        raise ModelLoadError(f"{path}: Detectron1/Caffe2 weight names (e.g. res2_0_branch2a_w) are not supported; "
                             "load it in detectron2 and save a model_final.pth")
    if any(k.startswith("backbone.body.") for k in state):
        rows = state.get("roi_heads.box_predictor.cls_score.weight")
        if rows is None:
            raise ModelLoadError(f"{path}: a torchvision detection checkpoint without a box predictor")
        if not any(k.startswith("roi_heads.mask_predictor.") for k in state):
            raise ModelLoadError(f"{path}: a torchvision Faster R-CNN (boxes only: no roi_heads.mask_predictor), "
                                 "not a Mask R-CNN")
        config = MaskRCNNConfig.torchvision_default(int(rows.shape[0]) - 1)
        conv2 = state.get("backbone.body.layer1.0.conv2.weight")
        n_layer3 = len({k.split(".")[3] for k in state if k.startswith("backbone.body.layer3.")})
        config.depth = {6: 50, 23: 101}.get(n_layer3, 50)
        if conv2 is not None:
            config.groups = int(conv2.shape[0] // conv2.shape[1])
            config.width_per_group = int(conv2.shape[0] // config.groups)
        return {k: (v if hasattr(v, "dim") else _as_tensor(v)) for k, v in state.items()}, [], config
    names = ", ".join(list(state)[:5]) or "no weights"
    raise ModelLoadError(f"{path}: not a Mask R-CNN checkpoint (found {names})")


def _as_tensor(value):
    import torch

    return torch.from_numpy(np.ascontiguousarray(value))


# ---------------------------------------------------------------- model


def build_model(config: MaskRCNNConfig, trainable_layers: int = 5, device=None):
    """A torchvision Mask R-CNN shaped and set up like ``config`` (random weights).

    ``device="meta"`` skips the random initialisation (weights are loaded right after).
    """
    import torch

    if device is not None:
        with torch.device(device):
            return build_model(config, trainable_layers)
    from torchvision.models import resnet
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

    layers = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[config.depth]
    body = resnet.ResNet(resnet.Bottleneck, layers, groups=config.groups, width_per_group=config.width_per_group,
                         norm_layer=FrozenBatchNorm2d)
    if config.stride_in_1x1:
        patch_stride_in_1x1(body)
    backbone = _resnet_fpn_extractor(body, trainable_layers)
    pool = AlignedMultiScaleRoIAlign if config.roi_align_aligned else MultiScaleRoIAlign
    levels = ["0", "1", "2", "3"]
    anchors = AnchorGenerator(sizes=config.anchor_sizes, aspect_ratios=(config.aspect_ratios,) * len(config.anchor_sizes))
    model = MaskRCNN(
        backbone, num_classes=config.num_classes + 1,
        min_size=config.min_size_test, max_size=config.max_size_test,
        image_mean=[m / 255 for m in config.pixel_mean], image_std=[s / 255 for s in config.pixel_std],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_topk_test, rpn_post_nms_top_n_test=config.rpn_post_nms_topk_test,
        rpn_nms_thresh=config.rpn_nms_thresh,
        box_roi_pool=pool(levels, 7, config.sampling_ratio),
        mask_roi_pool=(AlignedMultiScaleRoIAlign if config.mask_roi_align_aligned else MultiScaleRoIAlign)(
            levels, config.mask_pooler_resolution, config.mask_sampling_ratio),
        box_score_thresh=config.score_thresh, box_nms_thresh=config.nms_thresh,
        box_detections_per_img=config.detections_per_image,
    )
    return model


def patch_stride_in_1x1(resnet_body) -> None:
    """Caffe/MSRA ResNets (detectron2 STRIDE_IN_1X1) downsample in the first 1x1 conv, not the 3x3."""
    for layer in (resnet_body.layer2, resnet_body.layer3, resnet_body.layer4):
        block = layer[0]
        stride = block.conv2.stride
        block.conv1.stride, block.conv2.stride = stride, (1, 1)


def _aligned_roi_align_class():
    from torchvision.ops import MultiScaleRoIAlign, roi_align
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

    class _Aligned(MultiScaleRoIAlign):
        """MultiScaleRoIAlign with ``aligned=True`` (detectron2's ROIAlignV2: half-pixel offset)."""

        def forward(self, x, boxes, image_shapes):
            features = _filter_input(x, self.featmap_names)
            if self.scales is None or self.map_levels is None:
                self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                             self.canonical_level)
            rois = _convert_to_roi_format(boxes)
            if len(features) == 1:
                return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio,
                                 aligned=True)
            levels = self.map_levels(boxes)
            result = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
            for level, (feature, scale) in enumerate(zip(features, self.scales)):
                index = (levels == level).nonzero().squeeze(1)
                result[index] = roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio,
                                          aligned=True).to(result.dtype)
            return result

    return _Aligned


def AlignedMultiScaleRoIAlign(*args, **kwargs):  # noqa: N802 (a class factory: torchvision imported lazily)
    return _aligned_roi_align_class()(*args, **kwargs)


# ---------------------------------------------------------------- backend


def _default_class_names(config: MaskRCNNConfig) -> dict[int, str]:
    if config.class_names:
        return dict(config.class_names)
    return {0: "cell"} if config.num_classes == 1 else {i: f"class {i}" for i in range(config.num_classes)}


class MaskRCNNBackend:
    """A Mask R-CNN that predicts instances on uint8 RGB tiles.

    Input statistics follow ``settings.normalization``: "model" (the checkpoint's pixel mean/std),
    "imagenet" (ImageNet statistics) or "image" (the frame's own per-channel mean and standard
    deviation). ``engine``: "torchvision" (default) or "detectron2" (run the checkpoint with
    detectron2 itself, if it is installed).

    detectron2 checkpoints run through :class:`.detectron2_inference.Detectron2Inference`
    (detectron2's own arithmetic on the converted modules: its predictions, within float32 noise);
    torchvision checkpoints through torchvision's heads.
    """

    def __init__(self, path: str | Path, device: str = "auto", engine: str = "torchvision"):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such model file")
        self.device = resolve_device(device)
        state, unmapped, config = checkpoint_to_torchvision(path)
        self.config = config
        self.model = build_model(config, device="meta")  # no random init: every tensor comes from the file
        load_weights_strict(self.model, state, unmapped, path)
        self.model.eval().to(self.device)
        # what the user should know, in every run's warnings (CLI summary, status line): everything loading
        # noted except the routine "settings read from config.yaml"
        notes = [] if getattr(config, "notes_are_history", False) else [
            f"{path.name}: {n}" for n in config.notes if not n.startswith("settings read from")]
        for note in notes:
            log.warning("%s", note)
        self._frame_shape: tuple[int, int] | None = None
        self._frame = None  # the frame's statistics are computed only when asked for
        self._frame_stats: tuple | None = None
        self._detectron2 = _Detectron2Runner(path, config, self.device) if engine == "detectron2" else None
        # detectron2's inference arithmetic for detectron2 checkpoints (and models fine-tuned from one)
        self.exact = Detectron2Inference(self.model, config) if config.source == "detectron2" else None
        if engine not in ("torchvision", "detectron2"):
            raise ModelLoadError(f"unknown engine '{engine}'; use torchvision or detectron2")
        self.info = ModelInfo(
            backend=NAME, path=str(path.resolve()), sha256=sha256_of(path), task="segment",
            class_names=_default_class_names(config),
            train_imgsz=config.max_size_test,  # one tile covers what detectron2 would see at once
            # detectron2's own input: the frame's uint8 pixels, resized whole by ResizeShortestEdge
            wants_raw_uint8=self.exact is not None and config.input_range == "raw",
            wants_whole_frame=self.exact is not None,
            notes=notes,
            extra={"source": config.source, "architecture": self.architecture, "engine": engine,
                   "inference": "detectron2" if self.exact is not None else "torchvision",
                   "notes": list(config.notes),
                   "config": {k: v for k, v in config.to_dict().items() if k not in ("notes", "class_names")}},
        )

    @property
    def architecture(self) -> str:
        c = self.config
        if c.groups > 1:
            return f"ResNeXt-{c.depth}-{c.groups}x{c.width_per_group}d-FPN"
        return f"ResNet-{c.depth}-FPN"

    # -- preprocessing (shared by ensemble members with the same key)

    def begin_frame(self, frame: np.ndarray) -> None:
        self._frame_shape = tuple(frame.shape[:2])
        self._frame, self._frame_stats = frame, None

    def preprocess_key(self, settings: InferenceSettings) -> tuple:
        c = self.config
        return (self.exact is not None, c.input_format, tuple(c.pixel_mean), tuple(c.pixel_std), c.min_size_test,
                c.max_size_test, settings.normalization, self.device, self._frame_shape, settings.zoom)

    def _mean_std(self, tile: np.ndarray, normalization: str) -> tuple[np.ndarray, np.ndarray]:
        bgr = self.config.input_format.upper() == "BGR"
        if normalization == "model":
            return np.array(self.config.pixel_mean), np.array(self.config.pixel_std)
        if normalization == "imagenet":
            mean, std = np.array(IMAGENET_MEAN_255), np.array(IMAGENET_STD_255)
        elif normalization == "image":
            if self._frame_stats is None:  # the whole frame's statistics, so tiles agree
                source = self._frame if self._frame is not None else tile
                pixels = np.asarray(source).reshape(-1, 3)[:: max(1, source.size // 3 // 4_000_000)]
                self._frame_stats = (pixels.mean(0), np.maximum(pixels.std(0), 1.0))
            mean, std = self._frame_stats
        else:
            raise ValueError(f"unknown normalisation '{normalization}'; use one of {', '.join(NORMALIZATIONS)}")
        return (mean[::-1].copy(), std[::-1].copy()) if bgr else (mean, std)  # stats are RGB; match the input order

    def scale_for(self, tile_shape: tuple[int, int], settings: InferenceSettings) -> float:
        """An explicit zoom (imgsz/tile) wins; else detectron2's shortest-edge rule on the whole frame."""
        if abs(settings.zoom - 1.0) > 1e-6:
            return float(settings.zoom)
        h, w = self._frame_shape or tile_shape
        scale = self.config.min_size_test / min(h, w)
        if max(h, w) * scale > self.config.max_size_test:
            scale = self.config.max_size_test / max(h, w)
        return scale

    def _prepare_exact(self, tile: np.ndarray, settings: InferenceSettings):
        """detectron2's preprocessing: PIL resize of the uint8 tile, then mean/std, then padding."""
        h, w = tile.shape[:2]
        whole_frame = self._frame_shape is None or tuple(self._frame_shape) == (h, w)
        explicit = abs(settings.zoom - 1.0) > 1e-6 or not whole_frame
        shape = self.exact.input_shape(h, w, self.scale_for((h, w), settings) if explicit else None)
        image = tile[..., ::-1] if self.config.input_format.upper() == "BGR" else tile
        mean, std = self._mean_std(tile, settings.normalization)
        batch = self.exact.preprocess(np.ascontiguousarray(image), shape, mean, std, self.device)
        return ("detectron2", batch, shape), (h, w)

    def prepare(self, tile: np.ndarray, settings: InferenceSettings):
        import torch

        if self.exact is not None:
            return self._prepare_exact(np.asarray(tile, np.uint8), settings)
        from torchvision.models.detection.image_list import ImageList

        h, w = tile.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(tile)).to(self.device).permute(2, 0, 1).float()
        if self.config.input_format.upper() == "BGR":
            x = x.flip(0)
        mean, std = self._mean_std(tile, settings.normalization)
        x = (x - torch.as_tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]) \
            / torch.as_tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
        scale = self.scale_for((h, w), settings)
        size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
        if size != (h, w):
            x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        batch = self.model.transform.batch_images([x], size_divisible=32)
        return ImageList(batch, [size]), (h, w)

    # -- prediction

    def predict_prepared(self, prepared, settings: InferenceSettings, soft: bool = False) -> TileDetections:
        import torch

        images, (h, w) = prepared
        if self.exact is not None:
            return self._predict_exact(images, (h, w), settings, soft)
        heads = self.model.roi_heads
        heads.score_thresh = settings.conf
        heads.detections_per_img = min(self.config.detections_per_image, settings.max_det)
        with torch.inference_mode():
            features = self.model.backbone(images.tensors)
            proposals, _ = self.model.rpn(images, features)
            detections, _ = heads(features, proposals, images.image_sizes)
            detections = self.model.transform.postprocess(detections, images.image_sizes, [(h, w)])[0]
        return _to_tile_detections(detections, (h, w), soft)

    def _predict_exact(self, prepared, shape: tuple[int, int], settings: InferenceSettings,
                       soft: bool) -> TileDetections:
        import torch

        _, batch, input_shape = prepared
        max_det = min(self.config.detections_per_image, settings.max_det)
        with torch.inference_mode():
            raw = self.exact.detect(batch, input_shape, settings.conf, max_det)
            boxes, scores, classes, masks = self.exact.postprocess(raw, shape)
        if len(scores) == 0:
            return TileDetections.empty(shape)
        masks = masks.cpu().numpy() if soft else (masks >= settings.mask_threshold).cpu().numpy()
        return TileDetections(masks=masks, scores=scores.float().cpu().numpy(),
                              class_ids=classes.cpu().numpy().astype(np.int64), boxes=boxes.float().cpu().numpy())

    def predict_raw(self, tile: np.ndarray, settings: InferenceSettings):
        """detectron2's outputs before postprocessing (boxes in network-input pixels, 28x28 mask
        probabilities), like ``model.inference(..., do_postprocess=False)``; detectron2 checkpoints only."""
        import torch

        if self.exact is None:
            raise ValueError("predict_raw needs a detectron2 checkpoint")
        (_, batch, input_shape), _ = self._prepare_exact(np.asarray(tile, np.uint8), settings)
        with torch.inference_mode():
            return self.exact.detect(batch, input_shape, settings.conf,
                                     min(self.config.detections_per_image, settings.max_det))

    def predict_tile_soft(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        """Instances with mask probabilities (float) instead of binary masks, for fusion."""
        if self._detectron2 is not None:
            return self._detectron2.predict(tile, settings, self)
        return self.predict_prepared(self.prepare(tile, settings), settings, soft=True)

    def predict_tile(self, tile: np.ndarray, settings: InferenceSettings) -> TileDetections:
        if self._detectron2 is not None:
            return binarize(self._detectron2.predict(tile, settings, self))
        return self.predict_prepared(self.prepare(tile, settings), settings, soft=False)


def _to_tile_detections(detections: dict, shape: tuple[int, int], soft: bool) -> TileDetections:
    if len(detections["scores"]) == 0:
        return TileDetections.empty(shape)
    masks = detections["masks"][:, 0]
    masks = masks.float().cpu().numpy() if soft else (masks >= 0.5).cpu().numpy()
    return TileDetections(
        masks=masks,
        scores=detections["scores"].float().cpu().numpy(),
        class_ids=(detections["labels"] - 1).cpu().numpy().astype(np.int64),  # torchvision 1..K -> 0..K-1
        boxes=detections["boxes"].float().cpu().numpy(),
    )


def binarize(detections: TileDetections) -> TileDetections:
    if detections.masks.dtype == bool:
        return detections
    return TileDetections(detections.masks >= 0.5, detections.scores, detections.class_ids, detections.boxes)


class _Detectron2Runner:
    """Runs the checkpoint with detectron2 itself (only when detectron2 is installed)."""

    def __init__(self, path: Path, config: MaskRCNNConfig, device: str):
        try:
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
        except ImportError as exc:
            raise ModelLoadError("engine 'detectron2' needs detectron2 installed; use engine 'torchvision'") from exc
        cfg = get_cfg()
        config_path = Path(path).parent / "config.yaml"
        if config_path.is_file():
            cfg.merge_from_file(str(config_path))
        else:
            cfg.MODEL.RESNETS.DEPTH = config.depth
            cfg.MODEL.RESNETS.NUM_GROUPS = config.groups
            cfg.MODEL.RESNETS.WIDTH_PER_GROUP = config.width_per_group
            cfg.MODEL.RESNETS.STRIDE_IN_1X1 = config.stride_in_1x1
            cfg.MODEL.PIXEL_STD = list(config.pixel_std)
            cfg.MODEL.MASK_ON = True
            cfg.MODEL.ROI_HEADS.NUM_CLASSES = config.num_classes
        cfg.MODEL.WEIGHTS = str(path)
        cfg.MODEL.DEVICE = device
        self.cfg = cfg
        self._predictor_class = DefaultPredictor
        self._predictor = None

    def predict(self, tile: np.ndarray, settings: InferenceSettings, backend: MaskRCNNBackend) -> TileDetections:
        if self._predictor is None or self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST != settings.conf:
            self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.conf
            self._predictor = self._predictor_class(self.cfg)
        instances = self._predictor(np.ascontiguousarray(tile[..., ::-1]))["instances"].to("cpu")  # it takes BGR
        if len(instances) == 0:
            return TileDetections.empty(tile.shape[:2])
        return TileDetections(instances.pred_masks.numpy(), instances.scores.numpy(),
                              instances.pred_classes.numpy().astype(np.int64),
                              instances.pred_boxes.tensor.numpy())
