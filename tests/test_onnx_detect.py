"""The ONNX detection backend (yolo/onnx_detect.py) against ultralytics' own predict: its ONNX exports as
ultralytics runs them, and the YOLOv6 layout (1, N, 5 + nc) as a wrapper of the same network gives it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.core.detection import DetectionResult
from napari_cellseg.core.result import OBJECT_COLUMNS

from synthetic import disc_image
from tiny_detector import IMGSZ, disc_samples, match_boxes, max_overlap_of_smaller, segment_cli_detections

CONF = 0.05


class _Yolov6Layout:
    """torch module factory: ultralytics' (1, 4 + nc, N) output as YOLOv6's (1, N, 5 + nc), with a real
    objectness: obj = sqrt(best class score), class scores / obj, so that obj x class = ultralytics' score."""

    @staticmethod
    def build(model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                y = self.net(x)
                y = (y[0] if isinstance(y, (list, tuple)) else y).transpose(1, 2)  # (1, N, 4 + nc)
                boxes, cls = y[..., :4], y[..., 4:]
                obj = cls.max(-1, keepdim=True).values.clamp_min(1e-12).sqrt()
                return torch.cat([boxes, obj, cls / obj], -1)

        return Wrapper(model)


@pytest.fixture(scope="session")
def yolov6_export(tiny_detector, tmp_path_factory) -> Path:
    """The tiny detector's network exported with torch.onnx.export in YOLOv6's output layout, no metadata, as
    YOLOv6's deploy/ONNX/export_onnx.py writes it (input 'images' (1, 3, imgsz, imgsz), output 'outputs')."""
    import torch
    from ultralytics import YOLO

    net = YOLO(str(tiny_detector[0])).model.float().eval()
    for m in net.modules():
        if hasattr(m, "export"):
            m.export = True  # the head's inference output only (no feature maps), as ultralytics exports it
    wrapper = _Yolov6Layout.build(net).eval()
    path = tmp_path_factory.mktemp("yolov6") / "tiny_v6.onnx"
    with torch.no_grad():
        torch.onnx.export(wrapper, torch.zeros(1, 3, IMGSZ, IMGSZ), str(path), input_names=["images"],
                          output_names=["outputs"], opset_version=13, dynamo=False)
    return path


def _assert_same_boxes(ours: DetectionResult, ref_boxes, ref_scores, box_atol, score_atol):
    assert ours.n_objects == len(ref_scores) >= 3
    pairs = match_boxes(ours.boxes, ref_boxes, min_iou=0.99)
    assert len(pairs) == len(ref_scores)
    np.testing.assert_allclose([ours.boxes[i] for i, _ in pairs], [ref_boxes[j] for _, j in pairs], atol=box_atol)
    np.testing.assert_allclose([ours.scores[i] for i, _ in pairs], [ref_scores[j] for _, j in pairs],
                               atol=score_atol)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("seed", [900, 901])
def test_ultralytics_export_gives_ultralytics_onnx_predict(tiny_detector_onnx, kind, seed):
    """The same .onnx through ultralytics' predict (its ONNX Runtime path) and through the pipeline, on an image
    the size of imgsz (one tile, no letterbox): the same boxes and scores."""
    from ultralytics import YOLO

    from napari_cellseg import load_model, segment

    path = tiny_detector_onnx[kind]
    model = load_model(path, device="cpu")
    assert model.info.backend == "onnx-detect" and model.info.task == "detect"
    assert model.layout == "ultralytics" and model.info.class_names == {0: "nucleus"}
    assert model.info.train_imgsz == IMGSZ and (model.fixed == (IMGSZ, IMGSZ)) == (kind == "static")
    _, rgb, _, _, _ = next(disc_samples(1, seed=seed))
    ours = segment(rgb, model, conf=CONF, max_det=300)
    theirs = YOLO(str(path), task="detect").predict(rgb[..., ::-1].copy(), imgsz=IMGSZ, conf=CONF, max_det=300,
                                                   device="cpu", verbose=False)[0]
    _assert_same_boxes(ours, theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy(), box_atol=1e-3, score_atol=1e-5)


def test_an_export_with_nms_gives_ultralytics_onnx_predict(tiny_detector, tmp_path):
    """``nms=True`` exports (1, 300, 6): boxes already suppressed, read as they are."""
    from ultralytics import YOLO

    from napari_cellseg import load_model, segment

    copy = tmp_path / "nms.pt"
    shutil.copyfile(tiny_detector[0], copy)
    path = YOLO(str(copy)).export(format="onnx", imgsz=IMGSZ, nms=True, device="cpu", verbose=False)
    model = load_model(path, device="cpu")
    assert model.layout == "end2end"
    _, rgb, _, _, _ = next(disc_samples(1, seed=900))
    ours = segment(rgb, model, conf=CONF, max_det=300)
    theirs = YOLO(str(path), task="detect").predict(rgb[..., ::-1].copy(), imgsz=IMGSZ, conf=CONF, max_det=300,
                                                   device="cpu", verbose=False)[0]
    _assert_same_boxes(ours, theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy(), box_atol=1e-3, score_atol=1e-5)


@pytest.mark.parametrize("seed", [900, 901])
def test_yolov6_layout_gives_ultralytics_predict_of_the_original_model(tiny_detector, yolov6_export, seed):
    """A YOLOv6-layout export of the network (objectness x class scores) gives ultralytics' predict on the .pt."""
    from ultralytics import YOLO

    from napari_cellseg import load_model, segment

    model = load_model(yolov6_export, device="cpu")
    assert model.layout == "yolov6" and model.n_classes == 1 and model.fixed == (IMGSZ, IMGSZ)
    assert model.info.class_names == {0: "class 0"}  # no metadata and no dataset file beside it
    _, rgb, _, _, _ = next(disc_samples(1, seed=seed))
    ours = segment(rgb, model, conf=CONF, max_det=300)
    theirs = YOLO(str(tiny_detector[0])).predict(rgb[..., ::-1].copy(), imgsz=IMGSZ, conf=CONF, max_det=300,
                                                 device="cpu", verbose=False)[0]
    # ONNX Runtime against torch: float32 rounding apart
    _assert_same_boxes(ours, theirs.boxes.xyxy.numpy(), theirs.boxes.conf.numpy(), box_atol=1e-2, score_atol=1e-4)


def test_yolov6_class_names_come_from_a_dataset_file_beside_it(yolov6_export, tmp_path):
    from napari_cellseg import load_model

    copy = tmp_path / "cells.onnx"
    shutil.copyfile(yolov6_export, copy)
    (tmp_path / "data.yaml").write_text("nc: 1\nnames: ['nucleus']\n")
    assert load_model(copy, device="cpu").info.class_names == {0: "nucleus"}
    (tmp_path / "cells.yaml").write_text("names:\n  0: cell\n")  # <stem>.yaml comes first
    assert load_model(copy, device="cpu").info.class_names == {0: "cell"}
    (tmp_path / "cells.yaml").write_text("names: [a, b, c]\n")  # a count that does not fit: numbered, with a note
    model = load_model(copy, device="cpu")
    assert model.info.class_names == {0: "class 0"} and "3 classes" in model.info.notes[0]


def test_a_tile_larger_than_a_fixed_input_is_cut_into_windows(tiny_detector_onnx):
    """Tiles of 256 image pixels on a model fixed at 128: windows of 128 merged as tiles are; every object once."""
    from napari_cellseg import load_model, segment
    from napari_cellseg.core.datasets import boxes_from_labels

    image, labels = disc_image((300, 400), n=40, radius=(7, 12), seed=7, dtype=np.uint8)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    model = load_model(tiny_detector_onnx["static"], device="cpu")
    result = segment(rgb, model, conf=0.25, iou=0.5, tile=256)
    assert result.metadata["parameters"]["tile"] == 256
    b = result.boxes
    assert max_overlap_of_smaller(b) < 0.5  # no object twice
    truth = boxes_from_labels(labels)
    assert len(match_boxes(b, truth, min_iou=0.5)) >= 0.6 * len(truth)
    plain = segment(rgb, model, conf=0.25, iou=0.5)  # tiles of 128: the same objects, near enough
    assert abs(plain.n_objects - result.n_objects) <= 0.1 * plain.n_objects + 1


def test_probe_claims_onnx_files_but_not_the_plugins_own_cache(tiny_detector_onnx, tmp_path):
    from napari_cellseg.backends import ModelLoadError, load_model, probe_backend
    from napari_cellseg.core import onnx_cache

    assert probe_backend(tiny_detector_onnx["static"]) == "onnx-detect"
    for name in ("best.0123456789ab.yolo.onnx", "student.0123456789ab.unet.onnx",
                 "student.0123456789ab.unet-int8.onnx"):
        cached = tmp_path / name
        shutil.copyfile(tiny_detector_onnx["static"], cached)
        assert onnx_cache.is_cache_file(cached) and probe_backend(cached) is None
    # a cache file renamed is still recognised by the entry the plugin writes into it
    renamed = tmp_path / "renamed.onnx"
    onnx_cache.save_with_metadata(tiny_detector_onnx["static"], renamed, {"source_sha256": "0" * 64})
    with pytest.raises(ModelLoadError, match="napari-cellseg exported"):
        load_model(renamed, device="cpu")


def _onnx_model(path: Path, outputs: dict[str, list[int]], meta: dict[str, str] | None = None) -> Path:
    """A minimal ONNX graph: a (1, 3, 64, 64) input and outputs of the given shapes (constants)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, infos = [], []
    for name, shape in outputs.items():
        value = helper.make_tensor(f"{name}_v", TensorProto.FLOAT, shape, np.zeros(int(np.prod(shape))).tolist())
        nodes.append(helper.make_node("Constant", [], [name], value=value))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _one_line_error(path, match):
    from napari_cellseg.backends import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match=match) as error:
        load_model(path, device="cpu")
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    return str(error.value)


def test_unknown_layouts_and_damaged_files_are_one_line_errors(tiny_detector_onnx, tmp_path):
    _one_line_error(_onnx_model(tmp_path / "flat.onnx", {"out": [1, 7]}), r"output has shape \[1, 7\]")
    _one_line_error(_onnx_model(tmp_path / "square.onnx", {"out": [1, 4, 4]}), "neither")
    _one_line_error(_onnx_model(tmp_path / "seg.onnx", {"output0": [1, 37, 84], "output1": [1, 32, 16, 16]}),
                    "2 outputs.*segmentation")
    _one_line_error(_onnx_model(tmp_path / "useg.onnx", {"output0": [1, 37, 84]}, {"task": "segment"}),
                    "'segment' export")
    _one_line_error(_onnx_model(tmp_path / "e2e.onnx", {"num_dets": [1, 1], "det_boxes": [1, 100, 4],
                                                        "det_scores": [1, 100], "det_classes": [1, 100]}),
                    "--end2end")
    _one_line_error(_onnx_model(tmp_path / "names.onnx", {"out": [1, 9, 84]}, {"names": "{0: 'a'}"}),
                    "for the 1 classes")
    data = tiny_detector_onnx["static"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    _one_line_error(truncated, "not a readable ONNX model")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    _one_line_error(garbage, "not a readable ONNX model")


def test_output_layouts_from_shape_and_metadata():
    from napari_cellseg.yolo.onnx_detect import output_layout

    assert output_layout([1, 84, 8400], {}, {}) == ("ultralytics", 80)
    assert output_layout([1, 8400, 85], {}, {}) == ("yolov6", 80)
    assert output_layout(["batch", "anchors", 6], {}, {}) == ("yolov6", 1)
    # ultralytics' dynamic exports name the class axis too: its metadata says how many classes
    assert output_layout(["batch", "Concat_dim_1", "anchors"], {"task": "detect"}, {0: "a", 1: "b"}) == \
        ("ultralytics", 2)
    assert output_layout([1, 300, 6], {"end2end": "True", "task": "detect"}, {0: "a"}) == ("end2end", 1)
    # YOLOv5's export.py writes names and stride: (1, N, 5 + nc)
    assert output_layout([1, 25200, 7], {"stride": "32"}, {0: "a", 1: "b"}) == ("yolov6", 2)


def test_end2end_and_yolov6_decoding():
    from napari_cellseg.yolo.onnx_detect import decode

    e2e = np.array([[10, 10, 20, 20, 0.9, 1], [30, 30, 40, 40, 0.1, 0], [0, 0, 5, 5, 0.5, 0]], np.float32)
    boxes, scores, classes = decode(e2e, "end2end", 2, 0.25, 0.7, 300)
    np.testing.assert_allclose(scores, [0.9, 0.5])
    np.testing.assert_array_equal(classes, [1, 0])
    # YOLOv6: score = objectness x class score, the best class per anchor
    v6 = np.array([[15, 15, 10, 10, 0.5, 0.9, 0.2], [15, 15, 10, 10, 1.0, 0.1, 0.3]], np.float32)
    boxes, scores, classes = decode(v6, "yolov6", 2, 0.25, 0.7, 300)
    np.testing.assert_allclose(scores, [0.45, 0.3])
    np.testing.assert_array_equal(classes, [0, 1])
    np.testing.assert_allclose(boxes[0], [10, 10, 20, 20])


def test_cli_segment_with_an_onnx_model_writes_boxes_not_labels(tiny_detector_onnx, tmp_path):
    from napari_cellseg import segment
    from napari_cellseg.core.io import write_image

    _, rgb, _, _, _ = next(disc_samples(1, seed=903))
    image_path = tmp_path / "cells.png"
    write_image(image_path, rgb)
    model_path = tiny_detector_onnx["static"]
    expected = segment(rgb, str(model_path), device="cpu")
    assert isinstance(expected, DetectionResult) and expected.n_objects > 0
    out = tmp_path / "out"
    rows = segment_cli_detections(image_path, model_path, out, expected)
    assert tuple(rows[0]) == OBJECT_COLUMNS
    assert {r["class_name"] for r in rows} == {"nucleus"}
    provenance = json.loads((out / "cells_provenance.json").read_text())
    assert provenance["task"] == "detect" and provenance["model"]["backend"] == "onnx-detect"
    assert provenance["model"]["extra"]["layout"] == "ultralytics"
