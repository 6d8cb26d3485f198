"""Random-weight checkpoints in detectron2's own key layout (written from detectron2's module names).

The names follow detectron2's GeneralizedRCNN with a ResNet-FPN backbone: ``backbone.bottom_up.stem``,
``res2..res5`` bottleneck blocks with ``conv1..3`` (+ ``.norm``) and ``shortcut``, ``fpn_lateral*`` /
``fpn_output*``, ``proposal_generator.rpn_head``, ``roi_heads.box_head.fc1/fc2``,
``roi_heads.box_predictor`` (K+1 class rows, background last; 4K box rows) and
``roi_heads.mask_head.mask_fcn1..4/deconv/predictor`` (K channels).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def detectron2_state(num_classes: int = 1, depth: int = 50, groups: int = 1, width: int = 64, seed: int = 0,
                     cell_bias: float | None = None) -> dict[str, np.ndarray]:
    """He-initialised random weights; ``cell_bias`` makes every proposal a confident class-0 object."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def conv(name, out, inp, k, norm=True, bias=False):
        state[f"{name}.weight"] = he(out, inp, k, k)
        if bias:
            state[f"{name}.bias"] = np.zeros(out, np.float32)
        if norm:
            state[f"{name}.norm.weight"] = (1 + 0.1 * rng.standard_normal(out)).astype(np.float32)
            state[f"{name}.norm.bias"] = (0.1 * rng.standard_normal(out)).astype(np.float32)
            state[f"{name}.norm.running_mean"] = (0.1 * rng.standard_normal(out)).astype(np.float32)
            state[f"{name}.norm.running_var"] = (1 + 0.1 * rng.random(out)).astype(np.float32)

    conv("backbone.bottom_up.stem.conv1", 64, 3, 7)
    in_ch = 64
    for stage, n_blocks in zip(range(2, 6), BLOCKS[depth]):
        out = 256 * 2 ** (stage - 2)
        bottleneck = groups * width * 2 ** (stage - 2)
        for b in range(n_blocks):
            prefix = f"backbone.bottom_up.res{stage}.{b}"
            if b == 0:
                conv(f"{prefix}.shortcut", out, in_ch, 1)
            conv(f"{prefix}.conv1", bottleneck, in_ch, 1)
            conv(f"{prefix}.conv2", bottleneck, bottleneck // groups, 3)
            conv(f"{prefix}.conv3", out, bottleneck, 1)
            state[f"{prefix}.conv3.weight"] *= 0.2  # keeps the random residual stack from blowing up
            in_ch = out
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048)):
        conv(f"backbone.fpn_lateral{level}", 256, channels, 1, norm=False, bias=True)
        conv(f"backbone.fpn_output{level}", 256, 256, 3, norm=False, bias=True)
    conv("proposal_generator.rpn_head.conv", 256, 256, 3, norm=False, bias=True)
    conv("proposal_generator.rpn_head.objectness_logits", 3, 256, 1, norm=False, bias=True)
    conv("proposal_generator.rpn_head.anchor_deltas", 12, 256, 1, norm=False, bias=True)
    state["proposal_generator.rpn_head.anchor_deltas.weight"] *= 0.01
    state["roi_heads.box_head.fc1.weight"] = he(1024, 256 * 7 * 7)
    state["roi_heads.box_head.fc1.bias"] = np.zeros(1024, np.float32)
    state["roi_heads.box_head.fc2.weight"] = he(1024, 1024)
    state["roi_heads.box_head.fc2.bias"] = np.zeros(1024, np.float32)
    k = num_classes
    state["roi_heads.box_predictor.cls_score.weight"] = (0.01 * rng.standard_normal((k + 1, 1024))).astype(np.float32)
    state["roi_heads.box_predictor.cls_score.bias"] = (0.1 * rng.standard_normal(k + 1)).astype(np.float32)
    state["roi_heads.box_predictor.bbox_pred.weight"] = (0.001 * rng.standard_normal((4 * k, 1024))).astype(np.float32)
    state["roi_heads.box_predictor.bbox_pred.bias"] = np.zeros(4 * k, np.float32)
    for i in range(1, 5):
        conv(f"roi_heads.mask_head.mask_fcn{i}", 256, 256, 3, norm=False, bias=True)
    state["roi_heads.mask_head.deconv.weight"] = he(256, 256, 2, 2)  # ConvTranspose2d: (in, out, kh, kw)
    state["roi_heads.mask_head.deconv.bias"] = np.zeros(256, np.float32)
    state["roi_heads.mask_head.predictor.weight"] = (0.01 * rng.standard_normal((k, 256, 1, 1))).astype(np.float32)
    state["roi_heads.mask_head.predictor.bias"] = np.zeros(k, np.float32)
    if cell_bias is not None:  # detectron2 order: class 0 first, background last
        state["roi_heads.box_predictor.cls_score.weight"][:] = 0
        state["roi_heads.box_predictor.cls_score.bias"][:] = -cell_bias
        state["roi_heads.box_predictor.cls_score.bias"][0] = cell_bias
        state["roi_heads.mask_head.predictor.weight"][:] = 0
        state["roi_heads.mask_head.predictor.bias"][0] = cell_bias
    return state


def save_pth(state: dict, path: Path, config_yaml: str | None = None) -> Path:
    """As detectron2's checkpointer writes it: {'model': tensors, 'iteration': N}."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "iteration": 99}, path)
    if config_yaml is not None:
        (path.parent / "config.yaml").write_text(config_yaml)
    return path


def save_pkl(state: dict, path: Path) -> Path:
    """As detectron2's model zoo ships it: a plain pickle of numpy arrays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"model": state, "__author__": "test", "matching_heuristics": False}, fh)
    return path


SMALL_CONFIG = """\
MODEL:
  MASK_ON: true
  PIXEL_MEAN: [100.0, 110.0, 120.0]
  PIXEL_STD: [57.0, 57.0, 57.0]
  RESNETS: {DEPTH: 50, STRIDE_IN_1X1: true}
  ROI_HEADS: {NUM_CLASSES: %d, SCORE_THRESH_TEST: 0.3, NMS_THRESH_TEST: 0.4}
  RPN: {POST_NMS_TOPK_TEST: 60}
  ROI_BOX_HEAD: {POOLER_TYPE: ROIAlignV2, POOLER_SAMPLING_RATIO: 0}
INPUT: {MIN_SIZE_TEST: 128, MAX_SIZE_TEST: 256, FORMAT: BGR}
TEST: {DETECTIONS_PER_IMAGE: 20}
"""
