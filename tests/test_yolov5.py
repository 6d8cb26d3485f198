"""Checkpoints of the original YOLOv5 repository (yolo/yolov5.py, the optional ``yolov5`` extra).

Without the package (the test environment): such a file is recognised, and refused with the install command.
With it (``pip install "napari-cellseg[yolov5]"``): the pipeline gives the yolov5 package's own detections.
"""
import importlib.util
import math
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HAVE_YOLOV5 = importlib.util.find_spec("yolov5") is not None


def _fake_checkpoint(path: Path, model_class: bytes = b"DetectionModel") -> Path:
    """A zip checkpoint whose pickle refers to the YOLOv5 repository's own class and records its git remote, as
    YOLOv5 7.0 checkpoints do (so the text 'ultralytics' is in it, but no ultralytics class)."""
    class_ref = pickle.GLOBAL + b"models.yolo\n" + model_class + b"\n"
    remote = pickle.dumps({"remote": "https://github.com/ultralytics/yolov5"}, protocol=2)[2:-1]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.stem}/data.pkl", pickle.PROTO + b"\x02" + remote + pickle.POP + class_ref + b".")
    return path


def test_an_original_yolov5_checkpoint_is_recognised_without_unpickling(tmp_path):
    from napari_cellseg.backends import probe_backend
    from napari_cellseg.yolo import yolov5

    path = _fake_checkpoint(tmp_path / "yolov5s.pt")
    assert b"ultralytics" in zipfile.ZipFile(path).read("yolov5s/data.pkl")
    assert yolov5.probe(path) and probe_backend(path) == "yolov5"  # not "yolo" (ultralytics)
    assert probe_backend(_fake_checkpoint(tmp_path / "old.pt", b"Model")) == "yolov5"


@pytest.mark.skipif(HAVE_YOLOV5, reason="the yolov5 package is installed here")
def test_without_the_package_the_error_says_how_to_install_it(tmp_path):
    from napari_cellseg.backends import ModelLoadError, load_model

    path = _fake_checkpoint(tmp_path / "yolov5s.pt")
    with pytest.raises(ModelLoadError, match=r'original YOLOv5 repository.*pip install "napari-cellseg\[yolov5\]"'):
        load_model(path, device="cpu")
    image = tmp_path / "cells.png"
    from napari_cellseg.core.io import write_image

    write_image(image, np.zeros((32, 32, 3), np.uint8))
    env = {"PYTHONPATH": str(SRC), "YOLO_VERBOSE": "False", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "napari_cellseg.cli", "segment", str(image), "--model", str(path),
                           "--out", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert 'pip install "napari-cellseg[yolov5]"' in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_segmentation_and_classification_checkpoints_are_refused(tmp_path):
    from napari_cellseg.backends import ModelLoadError, load_model

    for kind in (b"SegmentationModel", b"ClassificationModel"):
        with pytest.raises(ModelLoadError, match=f"YOLOv5 {kind.decode()} checkpoint"):
            load_model(_fake_checkpoint(tmp_path / f"{kind.decode()}.pt", kind), device="cpu")


def _yolov5_checkpoint(path: Path) -> Path:
    """A YOLOv5n of one class built from the package's yolov5n.yaml and saved as the repository's train.py saves
    (the pickle names models.yolo.DetectionModel); weights drawn so that every anchor's output differs (a fresh
    init is nearly constant, which would leave NMS to break ties)."""
    import torch
    import yolov5.models.yolo  # puts the package's folder on sys.path: 'models.yolo' is the repository's module

    import models.yolo as repository

    torch.manual_seed(0)
    model = repository.DetectionModel(str(Path(yolov5.models.yolo.__file__).with_name("yolov5n.yaml")), ch=3, nc=1)
    model.names = ["nucleus"]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2 / m.weight[0].numel()))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
    torch.save({"model": model.half(), "ema": None, "epoch": -1, "opt": {"imgsz": 128}}, path)
    return path


@pytest.mark.skipif(not HAVE_YOLOV5, reason="the yolov5 package (the yolov5 extra) is not installed")
@pytest.mark.parametrize("conf", [0.001, 0.01])
def test_the_pipeline_gives_the_yolov5_packages_own_detections(tmp_path, monkeypatch, conf):
    from napari_cellseg import load_model, segment

    path = _yolov5_checkpoint(tmp_path / "yolov5n_tiny.pt")
    before = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    model = load_model(path, device="cpu")
    assert {k: os.environ.get(k) for k in before} == before  # yolov5's device selection leaves nothing behind
    assert model.info.backend == "yolov5" and model.info.task == "detect" and model.info.class_names == {0: "nucleus"}
    import yolov5

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    reference = yolov5.load(str(path), device="cpu")  # AutoShape: letterbox, the network, YOLOv5's NMS
    reference.conf, reference.iou, reference.max_det = conf, 0.7, 300
    for seed in (900, 901):
        rgb = np.random.default_rng(seed).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        ours = segment(rgb, model, conf=conf, iou=0.7, max_det=300)
        theirs = reference(rgb, size=128).xyxy[0].cpu().numpy()
        assert ours.n_objects == len(theirs) > 10
        a = np.concatenate([ours.boxes, ours.scores[:, None]], 1)
        b = theirs[:, :5].astype(np.float64)
        np.testing.assert_allclose(a[np.lexsort(a.T[::-1])], b[np.lexsort(b.T[::-1])], atol=1e-4)
