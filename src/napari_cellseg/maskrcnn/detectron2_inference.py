"""detectron2's Mask R-CNN inference (GeneralizedRCNN, ResNet-FPN), step by step with torchvision ops.

torchvision's ``MaskRCNN.forward`` differs from detectron2 in many small places (rounded anchors,
sigmoid-scored RPN top-k, ROIAlign level mapping, background-first scores, box decoding of the
background class, mask pasting), which together change which objects come out. The converted
weights are kept in the torchvision modules (backbone + FPN, RPN head, box and mask heads), and
only the arithmetic between them is done here the way detectron2 does it:

- input: the uint8 image resized with PIL bilinear (ResizeShortestEdge: MIN_SIZE_TEST, capped by
  MAX_SIZE_TEST), then ``(x - PIXEL_MEAN) / PIXEL_STD`` in the config's channel order, zero-padded
  to a multiple of 32;
- RPN: unrounded cell anchors (sizes x aspect ratios) on a grid starting at ``OFFSET * stride``,
  deltas decoded with weights (1, 1, 1, 1) and the log(1000/16) clamp, top ``PRE_NMS_TOPK_TEST``
  logits per level, clipped, empty boxes dropped, NMS per level, ``POST_NMS_TOPK_TEST`` per image;
- box head: ROIAlignV2 (aligned=True) on p2..p5 with detectron2's level rule (canonical 224 px at
  level 4), softmax over [classes, background], class-specific boxes decoded with
  ``BBOX_REG_WEIGHTS``, clipped, ``score > threshold``, NMS per class, ``DETECTIONS_PER_IMAGE``;
- mask head on the detected boxes, sigmoid of the detected class's channel (28x28);
- postprocess: boxes scaled to the output size, clipped, empty ones dropped, masks pasted with
  ``grid_sample`` (align_corners=False) one box at a time, as detectron2 does on the CPU.

Written from detectron2's documented behaviour and checked against its own predictions
(``shared/fixtures/detectron2``, tests/test_detectron2_fixture.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOX_DELTA_CLAMP = math.log(1000.0 / 16)  # detectron2's _DEFAULT_SCALE_CLAMP
FPN_STRIDES = (4, 8, 16, 32, 64)  # p2..p6
CANONICAL_BOX_SIZE, CANONICAL_LEVEL = 224, 4  # detectron2 ROIPooler defaults
SIZE_DIVISIBILITY = 32  # an FPN backbone's


def resized_shape(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """ResizeShortestEdge.get_output_shape: (new_h, new_w)."""
    size = float(short_edge)
    scale = size / min(h, w)
    new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_uint8(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a (h, w, 3) uint8 image, as detectron2's ResizeTransform does."""
    from PIL import Image

    if tuple(image.shape[:2]) == tuple(shape):
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(resized)


def cell_anchors(sizes, aspect_ratios):
    """(A, 4) anchors centred on 0, sizes outer and ratios inner, not rounded."""
    import torch

    anchors = []
    for size in sizes:
        area = float(size) ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(shape: tuple[int, int], stride: int, cells, offset: float):
    """(H * W * A, 4) anchors of one level, ordered (y, x, anchor)."""
    import torch

    device = cells.device
    xs = torch.arange(offset * stride, shape[1] * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(offset * stride, shape[0] * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


def apply_deltas(deltas, boxes, weights, clamp: float = BOX_DELTA_CLAMP):
    """Box2BoxTransform.apply_deltas: (R, 4k) deltas on (R, 4) boxes -> (R, 4k) boxes."""
    import torch

    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.stack((pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                       pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h), dim=-1)
    return out.reshape(deltas.shape)


def clip_boxes(boxes, shape: tuple[int, int]):
    import torch

    h, w = shape
    return torch.stack((boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h),
                        boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)), dim=-1)


def nonempty(boxes, threshold: float = 0.0):
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def pool_levels(features: list, boxes, output_size: int, sampling_ratio: int, aligned: bool,
                min_level: int = 2):
    """ROIPooler: each box pooled from the FPN level detectron2's rule assigns it to."""
    import torch
    from torchvision.ops import roi_align

    max_level = min_level + len(features) - 1
    if len(boxes) == 0:
        return features[0].new_zeros((0, features[0].shape[1], output_size, output_size))
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level
    rois = torch.cat([boxes.new_zeros((len(boxes), 1)), boxes], dim=1)
    out = features[0].new_zeros((len(boxes), features[0].shape[1], output_size, output_size))
    for level, feature in enumerate(features):
        index = torch.nonzero(levels == level).squeeze(1)
        if len(index):
            scale = 1.0 / 2 ** (level + min_level)
            out[index] = roi_align(feature, rois[index], (output_size, output_size), scale, sampling_ratio,
                                   aligned=aligned)
    return out


def paste_masks(probs, boxes, shape: tuple[int, int]):
    """(N, M, M) probabilities pasted into (N, h, w) float images (detectron2's paste_masks_in_image).

    One box at a time over the box's bounds plus one pixel, as detectron2 does on the CPU; outside
    that window a pasted value cannot reach 0.5, so thresholded masks equal its GPU result too.
    """
    import torch
    from torch.nn import functional as F

    img_h, img_w = shape
    out = torch.zeros((len(probs), img_h, img_w), dtype=torch.float32, device=probs.device)
    for i in range(len(probs)):
        box = boxes[i:i + 1]
        x0_int, y0_int = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32).tolist()
        x1_int = int(torch.clamp(box[:, 2].max().ceil() + 1, max=img_w).item())
        y1_int = int(torch.clamp(box[:, 3].max().ceil() + 1, max=img_h).item())
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)
        img_y = torch.arange(y0_int, y1_int, device=probs.device, dtype=torch.float32) + 0.5
        img_x = torch.arange(x0_int, x1_int, device=probs.device, dtype=torch.float32) + 0.5
        img_y = (img_y - y0) / (y1 - y0) * 2 - 1
        img_x = (img_x - x0) / (x1 - x0) * 2 - 1
        gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
        gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
        grid = torch.stack([gx, gy], dim=3)
        pasted = F.grid_sample(probs[i:i + 1, None].float(), grid, align_corners=False)
        out[i, y0_int:y1_int, x0_int:x1_int] = pasted[0, 0]
    return out


@dataclass
class RawDetections:
    """Detections in network-input coordinates, before postprocessing (detectron2's do_postprocess=False)."""

    boxes: object  # (N, 4) tensor, XYXY in the resized input
    scores: object  # (N,)
    classes: object  # (N,) int64, 0..K-1
    mask_probs: object  # (N, M, M) sigmoid probabilities of each detection's class
    input_shape: tuple[int, int]  # (h, w) of the resized image, before padding


class Detectron2Inference:
    """detectron2's inference on a torchvision MaskRCNN that holds converted detectron2 weights.

    The torchvision model keeps background at index 0 (the converter moves detectron2's last row
    there and adds zero background deltas and mask channel); those are skipped here.
    """

    def __init__(self, model, config):
        self.model = model
        self.config = config
        self._cells = None

    def _cell_anchors(self, device):
        if self._cells is None or self._cells[0].device != device:
            sizes = self.config.anchor_sizes
            self._cells = [cell_anchors(s, self.config.aspect_ratios).to(device) for s in sizes]
        return self._cells

    def input_shape(self, h: int, w: int, scale: float | None = None) -> tuple[int, int]:
        """The resized input's (h, w): detectron2's shortest-edge rule, or an explicit scale."""
        c = self.config
        if scale is None:
            return resized_shape(h, w, c.min_size_test, c.max_size_test)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def preprocess(self, image: np.ndarray, shape: tuple[int, int], mean, std, device):
        """(1, 3, H32, W32) normalised, zero-padded batch from a uint8 image in the model's channel order."""
        import torch
        from torch.nn import functional as F

        resized = resize_uint8(image, shape)
        x = torch.as_tensor(np.ascontiguousarray(resized.astype(np.float32).transpose(2, 0, 1)), device=device)
        mean = torch.as_tensor(np.asarray(mean, np.float32), device=device)[:, None, None]
        std = torch.as_tensor(np.asarray(std, np.float32), device=device)[:, None, None]
        x = (x - mean) / std
        h, w = x.shape[-2:]
        pad_h = (h + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY * SIZE_DIVISIBILITY - h
        pad_w = (w + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY * SIZE_DIVISIBILITY - w
        return F.pad(x, [0, pad_w, 0, pad_h], value=0.0)[None]

    # -- the network

    def proposals(self, features: list, input_shape: tuple[int, int]):
        """RPN: (R, 4) proposal boxes, sorted by objectness."""
        import torch
        from torchvision.ops import batched_nms

        c = self.config
        logits, deltas = self.model.rpn.head(features)
        cells = self._cell_anchors(features[0].device)
        if len(cells) == 1:
            cells = cells * len(features)
        boxes_all, scores_all, levels_all = [], [], []
        for level, (feature, logit, delta) in enumerate(zip(features, logits, deltas)):
            n, a, fh, fw = logit.shape
            logit = logit.permute(0, 2, 3, 1).reshape(-1)  # (H, W, A)
            delta = delta.view(n, a, 4, fh, fw).permute(0, 3, 4, 1, 2).reshape(-1, 4)
            anchors = grid_anchors((fh, fw), FPN_STRIDES[level], cells[level], c.anchor_offset)
            proposals = apply_deltas(delta, anchors, c.rpn_box_reg_weights)
            k = min(len(logit), c.rpn_pre_nms_topk_test)
            top_scores, top_index = logit.topk(k)
            boxes_all.append(proposals[top_index])
            scores_all.append(top_scores)
            levels_all.append(torch.full((k,), level, dtype=torch.int64, device=logit.device))
        boxes, scores, levels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(levels_all)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes = clip_boxes(boxes, input_shape)
        keep = nonempty(boxes, c.rpn_min_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes.float(), scores, levels, c.rpn_nms_thresh)[:c.rpn_post_nms_topk_test]
        return boxes[keep]

    def detect(self, batch, input_shape: tuple[int, int], score_thresh: float, max_det: int) -> RawDetections:
        """The whole network on a preprocessed batch of one image."""
        import torch
        from torch.nn import functional as F
        from torchvision.ops import batched_nms

        c = self.config
        heads = self.model.roi_heads
        features = list(self.model.backbone(batch).values())  # p2..p6
        proposals = self.proposals(features, input_shape)
        box_features = pool_levels(features[:4], proposals, 7, c.sampling_ratio, c.roi_align_aligned)
        x = heads.box_head(box_features)
        logits, deltas = heads.box_predictor(x)
        k = c.num_classes
        probs = F.softmax(logits, dim=-1)  # torchvision order: background first
        scores = probs[:, 1:]  # (R, K); softmax does not depend on the order
        boxes = apply_deltas(deltas[:, 4:], proposals, c.box_reg_weights)  # (R, 4K), no background block
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        boxes, scores = boxes[valid], scores[valid]
        boxes = clip_boxes(boxes.reshape(-1, 4), input_shape).view(-1, k, 4)
        mask = scores > score_thresh
        index = mask.nonzero()
        boxes, scores = boxes[mask], scores[mask]
        keep = batched_nms(boxes.float(), scores, index[:, 1], c.nms_thresh)
        if max_det >= 0:
            keep = keep[:max_det]
        boxes, scores, classes = boxes[keep], scores[keep], index[keep, 1]
        mask_features = pool_levels(features[:4], boxes, c.mask_pooler_resolution, c.mask_sampling_ratio,
                                    c.mask_roi_align_aligned)
        mask_logits = heads.mask_predictor(heads.mask_head(mask_features))  # (N, K + 1, M, M)
        mask_probs = mask_logits[torch.arange(len(boxes), device=boxes.device), classes + 1].sigmoid()
        return RawDetections(boxes, scores, classes, mask_probs, tuple(input_shape))

    def postprocess(self, raw: RawDetections, output_shape: tuple[int, int]):
        """(boxes, scores, classes, pasted mask probabilities) in output pixels (detector_postprocess)."""
        out_h, out_w = output_shape
        boxes = raw.boxes.clone()
        boxes[:, 0::2] *= out_w / raw.input_shape[1]
        boxes[:, 1::2] *= out_h / raw.input_shape[0]
        boxes = clip_boxes(boxes, output_shape)
        keep = nonempty(boxes)
        boxes = boxes[keep]
        masks = paste_masks(raw.mask_probs[keep], boxes, output_shape)
        return boxes, raw.scores[keep], raw.classes[keep], masks

    def __call__(self, image: np.ndarray, mean, std, score_thresh: float, max_det: int,
                 scale: float | None = None):
        """A uint8 (h, w, 3) image in the model's channel order -> postprocessed detections."""
        import torch

        device = next(self.model.parameters()).device
        h, w = image.shape[:2]
        shape = self.input_shape(h, w, scale)
        with torch.inference_mode():
            batch = self.preprocess(image, shape, mean, std, device)
            raw = self.detect(batch, shape, score_thresh, max_det)
            return raw, self.postprocess(raw, (h, w))
