"""The "Evaluate" widget: a prediction against ground truth, with FP/FN layers to inspect."""
from __future__ import annotations

import napari  # a real annotation: napari injects the viewer by the parameter's type

import numpy as np
from magicgui import widgets

from ._common import WorkerWidget, notify_error, wrapping
from ._layers import META_KEY
from ._plot import LinePlot


def _evaluate_job(pred: np.ndarray, gt: np.ndarray, threshold: float):
    from ..core.metrics import evaluate, unmatched
    from ..core.progress import Progress

    yield Progress(0, 2, 0, 1, "matching objects")
    row = evaluate(pred, gt)
    yield Progress(1, 2, 0, 1, "finding misses")
    false_pos, false_neg = unmatched(pred, gt, threshold)
    return row, false_pos, false_neg


class EvaluateWidget(WorkerWidget):
    def __init__(self, viewer: napari.viewer.Viewer):

        self.last_metrics = None
        self.prediction = widgets.create_widget(
            annotation=napari.layers.Labels, label="prediction",
            options={"tooltip": "the Labels layer to score, e.g. a Segment cells result"})
        self.ground_truth = widgets.create_widget(
            annotation=napari.layers.Labels, label="truth",
            options={"tooltip": "the true labels, of the same shape as the prediction"})
        self.threshold = widgets.FloatSpinBox(
            label="IoU for FP/FN", value=0.5, min=0.05, max=0.95, step=0.05,
            tooltip="intersection over union (0-1) at which a predicted and a true object match; unmatched "
                    "ones become the false-positive and false-negative layers (the scores use every threshold)")
        self.metrics = wrapping(widgets.Label(value="", tooltip="counts, F1, precision and recall at IoU 0.5, the DSB "
                                                       "score (mean over IoU 0.5-0.95), COCO mask mAP and Dice"))
        super().__init__(viewer, [self.prediction, self.ground_truth, self.threshold], "Evaluate")
        self.run_button.tooltip = "score the prediction; enabled once two Labels layers of the same shape are chosen"
        self.append(self.metrics)
        self.plot = LinePlot(viewer=viewer)
        self.native.layout().addWidget(self.plot.canvas)
        for picker in (self.prediction, self.ground_truth):
            viewer.layers.events.inserted.connect(picker.reset_choices)
            viewer.layers.events.removed.connect(picker.reset_choices)
            picker.changed.connect(self.refresh_run_button)
        self.refresh_run_button()

    def inputs_ready(self) -> bool:
        pred, gt = self.prediction.value, self.ground_truth.value
        return pred is not None and gt is not None and pred.data.shape == gt.data.shape

    def run(self):
        pred, gt = self.prediction.value, self.ground_truth.value
        if pred is None or gt is None:
            notify_error(ValueError("choose a prediction and a ground-truth Labels layer"))
            return
        if pred.data.shape != gt.data.shape:
            notify_error(ValueError(f"shapes differ: prediction {pred.data.shape}, ground truth {gt.data.shape}"))
            return
        self._start(_evaluate_job, np.asarray(pred.data), np.asarray(gt.data), self.threshold.value,
                    on_done=lambda out: self._on_done(pred, gt, *out))

    def _on_done(self, pred_layer, gt_layer, row, false_pos, false_neg):
        self.last_metrics = row
        self.metrics.value = (
            f"predicted {row['n_pred']}, true {row['n_gt']} (count error {row['count_error']:+d})\n"
            f"F1@0.5 {row['f1_50']:.3f}  precision {row['precision_50']:.3f}  recall {row['recall_50']:.3f}\n"
            f"DSB score {row['dsb_score']:.3f}  COCO mAP {row['coco_map']:.3f}  Dice {row['dice']:.3f}"
        )
        thresholds = [s["threshold"] for s in row["per_threshold"]]
        self.plot.show(thresholds, [s["score"] for s in row["per_threshold"]], label="TP/(TP+FP+FN)",
                       xlabel="IoU threshold", ylabel="score", title=f"{pred_layer.name} vs {gt_layer.name}")
        self.plot.show(thresholds, [s["f1"] for s in row["per_threshold"]], label="F1", xlabel="IoU threshold",
                       ylabel="score", clear=False)
        for role, source, ids in (("false positives", pred_layer, false_pos), ("false negatives", gt_layer, false_neg)):
            data = np.where(np.isin(source.data, ids), source.data, 0)
            name = f"{pred_layer.name} {role}"
            existing = [layer for layer in self._viewer.layers
                        if layer.metadata.get(META_KEY, {}).get("role") == role
                        and layer.metadata[META_KEY].get("prediction_layer_id") == pred_layer.unique_id]
            meta = {META_KEY: {"role": role, "prediction_layer_id": pred_layer.unique_id, "count": len(ids)}}
            if existing:
                existing[0].data, existing[0].metadata = data, meta
            else:
                self._viewer.add_labels(data, name=name, metadata=meta, scale=source.scale, translate=source.translate)
        self.status.value = f"{len(false_pos)} false positives, {len(false_neg)} false negatives"
