"""detectron2 Mask R-CNN checkpoints -> torchvision Mask R-CNN weights and settings (pure, no detectron2).

What differs between the two and changes results (each handled here or in the backend):

- class order: detectron2's ``cls_score`` has K foreground rows then background; torchvision wants
  background first. Its ``bbox_pred`` is class-specific for the K foreground classes only (4K rows);
  torchvision wants 4(K+1) with a background block first (zeros). Its mask predictor has K channels;
  torchvision K+1 (a zero background channel is prepended).
- names: backbone stages ``res2..res5`` -> ``layer1..layer4``, ``conv*.norm`` -> ``bn*``,
  ``shortcut`` -> ``downsample``; ``fpn_lateral2..5``/``fpn_output2..5`` -> FPN inner/layer blocks;
  RPN ``conv/objectness_logits/anchor_deltas`` -> ``head.conv/cls_logits/bbox_pred``; box head
  ``fc1/fc2`` -> ``fc6/fc7``; mask head ``mask_fcn1..4/deconv/predictor``.
- input: BGR in 0..255 with detectron2's own PIXEL_MEAN/PIXEL_STD; shortest-edge resize
  (MIN_SIZE_TEST, capped by MAX_SIZE_TEST); ROIAlignV2 (aligned=True, sampling ratio 0);
  MSRA ResNets stride in the first 1x1 convolution (STRIDE_IN_1X1).

These settings are read from the ``config.yaml`` detectron2 writes beside ``model_final.pth``;
without one, detectron2's defaults are used and a note says so.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.backend import ModelLoadError

# detectron2 defaults (detectron2/config/defaults.py) for what changes results
D2_PIXEL_MEAN = (103.530, 116.280, 123.675)  # BGR, 0..255
D2_PIXEL_STD_MSRA = (1.0, 1.0, 1.0)
D2_PIXEL_STD_FB = (57.375, 57.120, 58.395)  # FB/Caffe2 ResNeXt ImageNet models
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # RGB
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class MaskRCNNConfig:
    """Everything needed to rebuild a Mask R-CNN and feed it like the framework it was trained in."""

    source: str = "detectron2"  # or "torchvision"
    num_classes: int = 1  # foreground classes
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    input_format: str = "BGR"
    pixel_mean: tuple = D2_PIXEL_MEAN  # in input_format channel order, 0..255 units
    pixel_std: tuple = D2_PIXEL_STD_MSRA
    min_size_test: int = 800
    max_size_test: int = 1333
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    anchor_sizes: tuple = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0  # MODEL.PROPOSAL_GENERATOR.MIN_SIZE
    anchor_offset: float = 0.0
    rpn_box_reg_weights: tuple = (1.0, 1.0, 1.0, 1.0)
    box_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    roi_align_aligned: bool = True  # box pooler: ROIAlignV2
    sampling_ratio: int = 0
    mask_pooler_resolution: int = 14
    mask_roi_align_aligned: bool = True
    mask_sampling_ratio: int = 0
    class_names: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    # the 8-bit frames the weights learned from: "raw" (images as they were stored: detectron2 and
    # torchvision checkpoints) or "percentiles" (the plugin's per-channel stretch: fine-tuned here)
    input_range: str = "raw"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MaskRCNNConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("pixel_mean", "pixel_std", "aspect_ratios", "rpn_box_reg_weights", "box_reg_weights"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        if "anchor_sizes" in known:
            known["anchor_sizes"] = tuple(tuple(int(s) for s in level) for level in known["anchor_sizes"])
        if "class_names" in known:
            known["class_names"] = {int(k): str(v) for k, v in known["class_names"].items()}
        return cls(**known)

    @classmethod
    def torchvision_default(cls, num_classes: int) -> "MaskRCNNConfig":
        """torchvision's maskrcnn_resnet50_fpn settings (RGB, ImageNet statistics, ROIAlign v1)."""
        return cls(source="torchvision", num_classes=num_classes, stride_in_1x1=False, input_format="RGB",
                   pixel_mean=IMAGENET_MEAN_255, pixel_std=IMAGENET_STD_255, nms_thresh=0.5,
                   roi_align_aligned=False, sampling_ratio=2, mask_roi_align_aligned=False, mask_sampling_ratio=2)


# ---------------------------------------------------------------- config.yaml


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_yaml(path: Path, _depth: int = 0) -> dict:
    """A detectron2 config as a nested dict; a local ``_BASE_`` file is merged under it."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{path}: cannot read the detectron2 config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{path}: not a detectron2 config (expected a mapping)")
    base = cfg.pop("_BASE_", None)
    if base and _depth < 5:
        base_path = (Path(path).parent / str(base)).resolve()
        if base_path.is_file():
            cfg = _merge(read_config_yaml(base_path, _depth + 1), cfg)
    return cfg


# config key -> (MaskRCNNConfig field, converter)
_CONFIG_KEYS = {
    "MODEL.RESNETS.DEPTH": ("depth", int),
    "MODEL.RESNETS.NUM_GROUPS": ("groups", int),
    "MODEL.RESNETS.WIDTH_PER_GROUP": ("width_per_group", int),
    "MODEL.RESNETS.STRIDE_IN_1X1": ("stride_in_1x1", bool),
    "MODEL.PIXEL_MEAN": ("pixel_mean", lambda v: tuple(float(x) for x in v)),
    "MODEL.PIXEL_STD": ("pixel_std", lambda v: tuple(float(x) for x in v)),
    "INPUT.FORMAT": ("input_format", str),
    "INPUT.MIN_SIZE_TEST": ("min_size_test", int),
    "INPUT.MAX_SIZE_TEST": ("max_size_test", int),
    "MODEL.ROI_HEADS.NUM_CLASSES": ("num_classes", int),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": ("score_thresh", float),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": ("nms_thresh", float),
    "TEST.DETECTIONS_PER_IMAGE": ("detections_per_image", int),
    "MODEL.ANCHOR_GENERATOR.SIZES": ("anchor_sizes", lambda v: tuple(tuple(int(s) for s in lv) for lv in v)),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": ("aspect_ratios", lambda v: tuple(float(r) for r in v[0])),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": ("rpn_pre_nms_topk_test", int),
    "MODEL.RPN.POST_NMS_TOPK_TEST": ("rpn_post_nms_topk_test", int),
    "MODEL.RPN.NMS_THRESH": ("rpn_nms_thresh", float),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": ("sampling_ratio", int),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": ("roi_align_aligned", lambda v: str(v) == "ROIAlignV2"),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": ("mask_roi_align_aligned", lambda v: str(v) == "ROIAlignV2"),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": ("mask_sampling_ratio", int),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": ("mask_pooler_resolution", int),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": ("rpn_min_size", float),
    "MODEL.ANCHOR_GENERATOR.OFFSET": ("anchor_offset", float),
    "MODEL.RPN.BBOX_REG_WEIGHTS": ("rpn_box_reg_weights", lambda v: tuple(float(x) for x in v)),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ("box_reg_weights", lambda v: tuple(float(x) for x in v)),
}
_UNSUPPORTED = {
    "MODEL.RESNETS.RES5_DILATION": (1, "a dilated res5"),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": ([False] * 4, "deformable convolutions"),
    "MODEL.RESNETS.NORM": ("FrozenBN", "a normalisation other than (Frozen)BN"),
    "MODEL.ROI_HEADS.NAME": ("StandardROIHeads", "ROI heads other than StandardROIHeads (e.g. Cascade)"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": (0, "convolutions in the box head"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": (4, "a mask head without 4 convolutions"),
    "MODEL.MASK_ON": (True, "no mask head (MASK_ON false)"),
    "MODEL.META_ARCHITECTURE": ("GeneralizedRCNN", "a meta-architecture other than GeneralizedRCNN"),
    "MODEL.BACKBONE.NAME": ("build_resnet_fpn_backbone", "a backbone other than ResNet-FPN"),
    "MODEL.PROPOSAL_GENERATOR.NAME": ("RPN", "proposals other than an RPN"),
    "MODEL.ANCHOR_GENERATOR.NAME": ("DefaultAnchorGenerator", "rotated anchors"),
    "MODEL.RPN.HEAD_NAME": ("StandardRPNHead", "an RPN head other than StandardRPNHead"),
    "MODEL.RPN.CONV_DIMS": ([-1], "an RPN head with several convolutions"),
    "MODEL.RPN.IN_FEATURES": (["p2", "p3", "p4", "p5", "p6"], "RPN features other than p2..p6"),
    "MODEL.ROI_HEADS.IN_FEATURES": (["p2", "p3", "p4", "p5"], "ROI features other than p2..p5"),
    "MODEL.FPN.FUSE_TYPE": ("sum", "FPN fusion other than sum"),
    "MODEL.FPN.NORM": ("", "a normalised FPN"),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead", "a box head other than FastRCNNConvFCHead"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": (2, "a box head without 2 fully connected layers"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (7, "a box pooler other than 7x7"),
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": (False, "sigmoid box classification"),
    "MODEL.ROI_MASK_HEAD.NAME": ("MaskRCNNConvUpsampleHead", "a mask head other than MaskRCNNConvUpsampleHead"),
    "MODEL.ROI_MASK_HEAD.NORM": ("", "a normalised mask head"),
    "MODEL.KEYPOINT_ON": (False, "keypoints"),
    "TEST.AUG.ENABLED": (False, "detectron2's own test-time augmentation (use the plugin's TTA)"),
}


def config_from_detectron2(cfg: dict | None, source_name: str = "config.yaml") -> MaskRCNNConfig:
    """Settings from a detectron2 config dict; ``None`` gives detectron2's defaults (noted)."""
    config = MaskRCNNConfig()
    if cfg is None:
        config.notes.append("no config.yaml beside the checkpoint: detectron2 defaults used (BGR, PIXEL_MEAN "
                            f"{list(D2_PIXEL_MEAN)}, shortest edge {config.min_size_test}, at most "
                            f"{config.max_size_test}, ROIAlignV2)")
        return config
    read = []
    for key, (name, convert) in _CONFIG_KEYS.items():
        value = _get(cfg, key)
        if value is not None:
            setattr(config, name, convert(value))
            read.append(key)
    if _get(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS") and len(_get(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")) > 1:
        raise ModelLoadError(f"{source_name}: per-level anchor aspect ratios are not supported")
    if _get(cfg, "MODEL.RESNETS.DEPTH") is not None and config.depth not in (50, 101):
        raise ModelLoadError(f"{source_name}: ResNet depth {config.depth} is not supported (50 or 101)")
    for key in ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "MODEL.ROI_MASK_HEAD.POOLER_TYPE"):
        value = _get(cfg, key)
        if value is not None and str(value) not in ("ROIAlign", "ROIAlignV2"):
            raise ModelLoadError(f"{source_name}: {key} = {value}: only ROIAlign and ROIAlignV2 poolers are supported")
    for key, (supported, what) in _UNSUPPORTED.items():
        value = _get(cfg, key)
        if value is None or value == supported:
            continue
        if key == "MODEL.RESNETS.NORM" and value == "BN":
            continue
        raise ModelLoadError(f"{source_name}: {key} = {value}: {what} is not supported by the torchvision backend")
    if _get(cfg, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"):
        config.notes.append("class-agnostic mask head: one mask channel shared by all classes")
    config.notes.append(f"settings read from {source_name}: {len(read)} keys")
    return config


# ---------------------------------------------------------------- weights

_BACKBONE = re.compile(r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.(conv[123]|shortcut)(\.norm)?\.(\w+)$")
_STEM = re.compile(r"^backbone\.bottom_up\.stem\.conv1(\.norm)?\.(\w+)$")
_FPN = re.compile(r"^backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)$")
_SIMPLE = {
    "proposal_generator.rpn_head.conv": "rpn.head.conv.0.0",
    "proposal_generator.rpn_head.objectness_logits": "rpn.head.cls_logits",
    "proposal_generator.rpn_head.anchor_deltas": "rpn.head.bbox_pred",
    "roi_heads.box_head.fc1": "roi_heads.box_head.fc6",
    "roi_heads.box_head.fc2": "roi_heads.box_head.fc7",
    "roi_heads.mask_head.deconv": "roi_heads.mask_predictor.conv5_mask",
    **{f"roi_heads.mask_head.mask_fcn{i}": f"roi_heads.mask_head.{i - 1}.0" for i in range(1, 5)},
}
# buffers detectron2 may save that carry no weights
_IGNORED = re.compile(r"^(pixel_mean|pixel_std|.*anchor_generator\..*|.*num_batches_tracked)$")


def is_detectron2_state(state: dict) -> bool:
    return any(k.startswith(("backbone.bottom_up.", "proposal_generator.")) for k in state)


def is_caffe2_state(state: dict) -> bool:
    """Detectron1/Caffe2 names (e.g. ``res2_0_branch2a_w``), which this converter does not map."""
    return any(re.match(r"^res\d_\d+_branch", k) or k in ("conv1_w", "fc1000_w") for k in state)


def _tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(value))


def _map_name(name: str) -> str | None:
    m = _STEM.match(name)
    if m:
        return f"backbone.body.{'bn1' if m.group(1) else 'conv1'}.{m.group(2)}"
    m = _BACKBONE.match(name)
    if m:
        stage, block, conv, norm, param = m.groups()
        layer = f"backbone.body.layer{int(stage) - 1}.{block}"
        if conv == "shortcut":
            return f"{layer}.downsample.{1 if norm else 0}.{param}"
        return f"{layer}.{'bn' + conv[-1] if norm else conv}.{param}"
    m = _FPN.match(name)
    if m:
        kind, level, param = m.groups()
        blocks = "inner_blocks" if kind == "lateral" else "layer_blocks"
        return f"backbone.fpn.{blocks}.{int(level) - 2}.0.{param}"
    prefix, _, param = name.rpartition(".")
    if prefix in _SIMPLE:
        return f"{_SIMPLE[prefix]}.{param}"
    return None


def _found(state: dict) -> str:
    """The top-level modules of a state dict, to name what a checkpoint holds in an error."""
    prefixes = sorted({".".join(k.split(".")[:2]).rstrip("0123456789") for k in state})
    return ", ".join(prefixes[:8]) + (f" ... (+{len(prefixes) - 8} more)" if len(prefixes) > 8 else "")


def detectron2_architecture(state: dict) -> dict:
    """depth, groups, width_per_group and foreground class count, read off the weights' shapes."""
    if not any(k.startswith("roi_heads.") for k in state):
        raise ModelLoadError(f"a detectron2 checkpoint without ROI heads (RetinaNet or another one-stage "
                             f"detector?), not a Mask R-CNN; found {_found(state)}")
    if not any(k.startswith("roi_heads.mask_head.") for k in state):
        raise ModelLoadError("a detectron2 Faster R-CNN (boxes only: no roi_heads.mask_head), not a Mask R-CNN; "
                             f"found {_found(state)}")
    try:
        n_res4 = len({k.split(".")[3] for k in state if k.startswith("backbone.bottom_up.res4.")})
        conv2 = state["backbone.bottom_up.res2.0.conv2.weight"]
        cls_rows = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    except KeyError as exc:
        raise ModelLoadError(f"not a detectron2 Mask R-CNN with a ResNet-FPN backbone: {exc.args[0]} is missing; "
                             f"found {_found(state)}") from exc
    depth = {6: 50, 23: 101}.get(n_res4)
    if depth is None:
        raise ModelLoadError(f"a ResNet with {n_res4} blocks in res4 is not supported (ResNet-50: 6, ResNet-101: 23)")
    out_channels, in_per_group = conv2.shape[0], conv2.shape[1]
    groups = out_channels // in_per_group
    return {"depth": depth, "groups": groups, "width_per_group": out_channels // groups,
            "num_classes": int(cls_rows) - 1}


def config_contradictions(cfg: dict, state: dict) -> list[str]:
    """Shapes a detectron2 config fixes that the weights contradict (layer widths, anchors per location)."""
    facts = []
    lateral = state.get("backbone.fpn_lateral2.weight")
    if lateral is not None:
        facts.append(("MODEL.FPN.OUT_CHANNELS", int(lateral.shape[0])))
    fc1 = state.get("roi_heads.box_head.fc1.weight")
    if fc1 is not None:
        facts.append(("MODEL.ROI_BOX_HEAD.FC_DIM", int(fc1.shape[0])))
    fcn1 = state.get("roi_heads.mask_head.mask_fcn1.weight")
    if fcn1 is not None:
        facts.append(("MODEL.ROI_MASK_HEAD.CONV_DIM", int(fcn1.shape[0])))
    found = []
    for key, value in facts:
        wanted = _get(cfg, key)
        if wanted is not None and int(wanted) != value:
            found.append(f"{key} {wanted} in config.yaml vs {value} in the weights")
    logits = state.get("proposal_generator.rpn_head.objectness_logits.weight")
    sizes, ratios = _get(cfg, "MODEL.ANCHOR_GENERATOR.SIZES"), _get(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    if logits is not None and sizes and ratios:
        per_location = len(sizes[0]) * len(ratios[0])
        if per_location != int(logits.shape[0]):
            found.append(f"{per_location} anchors per location in config.yaml (SIZES x ASPECT_RATIOS) vs "
                         f"{int(logits.shape[0])} in the RPN weights")
    return found


def convert_detectron2_state(state: dict, num_classes: int) -> tuple[dict, list[str]]:
    """detectron2 names and layouts -> torchvision's; returns (state dict, detectron2 keys not mapped)."""
    import torch

    out: dict = {}
    unmapped: list[str] = []
    k = num_classes
    for name, value in state.items():
        if _IGNORED.match(name):
            continue
        tensor = _tensor(value)
        if name.startswith("roi_heads.box_predictor.cls_score."):
            if tensor.shape[0] != k + 1:
                raise ModelLoadError(f"{name} has {tensor.shape[0]} rows, expected {k + 1} (K classes + background)")
            # detectron2: [class 0..K-1, background]; torchvision: [background, class 0..K-1]
            out[name] = torch.cat([tensor[-1:], tensor[:-1]])
        elif name.startswith("roi_heads.box_predictor.bbox_pred."):
            if tensor.shape[0] == 4:  # class-agnostic regression: the same deltas for every class
                tensor = tensor.repeat(k, *([1] * (tensor.dim() - 1)))
            if tensor.shape[0] != 4 * k:
                raise ModelLoadError(f"{name} has {tensor.shape[0]} rows, expected {4 * k} (4 per class)")
            out[name] = torch.cat([torch.zeros_like(tensor[:4]), tensor])  # background block first
        elif name.startswith("roi_heads.mask_head.predictor."):
            if tensor.shape[0] == 1 and k > 1:  # class-agnostic mask
                tensor = tensor.repeat(k, *([1] * (tensor.dim() - 1)))
            if tensor.shape[0] != k:
                raise ModelLoadError(f"{name} has {tensor.shape[0]} channels, expected {k} (one per class)")
            param = name.rpartition(".")[2]
            out[f"roi_heads.mask_predictor.mask_fcn_logits.{param}"] = torch.cat([torch.zeros_like(tensor[:1]), tensor])
        else:
            target = _map_name(name)
            if target is None:
                unmapped.append(name)
            else:
                out[target] = tensor
    return out, unmapped


def load_weights_strict(model, state: dict, unmapped: list[str], path) -> None:
    """Load into ``model``; any missing, unexpected or mis-shaped tensor is a ModelLoadError listing them."""
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(unmapped) | (set(state) - set(expected)))
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in set(state) & set(expected)
                        if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mismatched:
        def listing(title, names):
            if not names:
                return ""
            shown = ", ".join(names[:12]) + (f" ... (+{len(names) - 12} more)" if len(names) > 12 else "")
            return f" {title} ({len(names)}): {shown}."

        raise ModelLoadError(
            f"{path}: the checkpoint's weights do not fit a Mask R-CNN ResNet-FPN."
            + listing("missing", missing) + listing("unexpected", unexpected)
            + listing("wrong shape", mismatched)
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)


# ---------------------------------------------------------------- back to detectron2 (fine-tuned checkpoints)


def _inverse_name(name: str) -> str | None:
    m = re.match(r"^backbone\.body\.(conv1|bn1)\.(\w+)$", name)
    if m:
        return f"backbone.bottom_up.stem.conv1{'.norm' if m.group(1) == 'bn1' else ''}.{m.group(2)}"
    m = re.match(r"^backbone\.body\.layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)$", name)
    if m:
        layer, block, part, param = m.groups()
        stage = f"backbone.bottom_up.res{int(layer) + 1}.{block}"
        if part.startswith("downsample"):
            return f"{stage}.shortcut{'.norm' if part.endswith('1') else ''}.{param}"
        return f"{stage}.conv{part[-1]}{'.norm' if part.startswith('bn') else ''}.{param}"
    m = re.match(r"^backbone\.fpn\.(inner|layer)_blocks\.([0-3])\.0\.(weight|bias)$", name)
    if m:
        kind, level, param = m.groups()
        return f"backbone.fpn_{'lateral' if kind == 'inner' else 'output'}{int(level) + 2}.{param}"
    prefix, _, param = name.rpartition(".")
    for d2, tv in _SIMPLE.items():
        if tv == prefix:
            return f"{d2}.{param}"
    return None


def torchvision_to_detectron2_state(state: dict, num_classes: int) -> dict:
    """The inverse of :func:`convert_detectron2_state`: torchvision names and layouts -> detectron2's
    (``backbone.bottom_up.res2..5``, background last in ``cls_score``, 4K box deltas, K mask channels),
    so ``DetectionCheckpointer`` loads the result into detectron2's own GeneralizedRCNN."""
    import torch

    out: dict = {}
    k = num_classes
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        tensor = value.detach().cpu().float()
        if name.startswith("roi_heads.box_predictor.cls_score."):
            out[name] = torch.cat([tensor[1:], tensor[:1]])  # background first -> last
        elif name.startswith("roi_heads.box_predictor.bbox_pred."):
            out[name] = tensor[4:].clone()  # drop the background block
        elif name.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            out[f"roi_heads.mask_head.predictor.{name.rpartition('.')[2]}"] = tensor[1:].clone()
        else:
            target = _inverse_name(name)
            if target is None:
                raise ModelLoadError(f"{name}: no detectron2 name for this torchvision weight")
            out[target] = tensor
    if out["roi_heads.box_predictor.cls_score.weight"].shape[0] != k + 1:
        raise ModelLoadError(f"the box predictor has {out['roi_heads.box_predictor.cls_score.weight'].shape[0]} rows, "
                             f"expected {k + 1}")
    return out


def detectron2_config_dict(config: MaskRCNNConfig, base: dict | None = None) -> dict:
    """A detectron2 config (nested dict, as ``cfg.dump()`` writes) describing ``config``: ``base`` (the start
    checkpoint's own config.yaml) with the keys this plugin knows set from ``config``."""
    import copy

    cfg = copy.deepcopy(base) if base else {
        "MODEL": {"META_ARCHITECTURE": "GeneralizedRCNN", "MASK_ON": True,
                  "BACKBONE": {"NAME": "build_resnet_fpn_backbone"},
                  "RESNETS": {"OUT_FEATURES": ["res2", "res3", "res4", "res5"], "NORM": "FrozenBN"},
                  "FPN": {"IN_FEATURES": ["res2", "res3", "res4", "res5"]},
                  "ANCHOR_GENERATOR": {"NAME": "DefaultAnchorGenerator"},
                  "RPN": {"IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"]},
                  "ROI_HEADS": {"NAME": "StandardROIHeads", "IN_FEATURES": ["p2", "p3", "p4", "p5"]},
                  "ROI_BOX_HEAD": {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "POOLER_RESOLUTION": 7},
                  "ROI_MASK_HEAD": {"NAME": "MaskRCNNConvUpsampleHead", "NUM_CONV": 4}},
        "VERSION": 2}
    values = {
        "MODEL.RESNETS.DEPTH": config.depth, "MODEL.RESNETS.NUM_GROUPS": config.groups,
        "MODEL.RESNETS.WIDTH_PER_GROUP": config.width_per_group, "MODEL.RESNETS.STRIDE_IN_1X1": config.stride_in_1x1,
        "MODEL.PIXEL_MEAN": list(config.pixel_mean), "MODEL.PIXEL_STD": list(config.pixel_std),
        "INPUT.FORMAT": config.input_format, "INPUT.MIN_SIZE_TEST": config.min_size_test,
        "INPUT.MAX_SIZE_TEST": config.max_size_test, "MODEL.ROI_HEADS.NUM_CLASSES": config.num_classes,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": config.score_thresh, "MODEL.ROI_HEADS.NMS_THRESH_TEST": config.nms_thresh,
        "TEST.DETECTIONS_PER_IMAGE": config.detections_per_image,
        "MODEL.ANCHOR_GENERATOR.SIZES": [list(s) for s in config.anchor_sizes],
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [list(config.aspect_ratios)],
        "MODEL.RPN.PRE_NMS_TOPK_TEST": config.rpn_pre_nms_topk_test,
        "MODEL.RPN.POST_NMS_TOPK_TEST": config.rpn_post_nms_topk_test, "MODEL.RPN.NMS_THRESH": config.rpn_nms_thresh,
        "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": config.sampling_ratio,
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2" if config.roi_align_aligned else "ROIAlign",
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2" if config.mask_roi_align_aligned else "ROIAlign",
        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": config.mask_sampling_ratio,
        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": config.mask_pooler_resolution,
        "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": config.rpn_min_size, "MODEL.ANCHOR_GENERATOR.OFFSET": config.anchor_offset,
        "MODEL.RPN.BBOX_REG_WEIGHTS": list(config.rpn_box_reg_weights),
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": list(config.box_reg_weights),
        "MODEL.WEIGHTS": "",
    }
    for dotted, value in values.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg
