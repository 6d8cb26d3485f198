from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    """Recent-model lists, ultralytics settings and ONNX exports that cannot sit beside their weights go to a
    temporary folder."""
    monkeypatch.setenv("NAPARI_CELLSEG_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_CELLSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory) -> Path:
    """A YOLO11n-seg trained for a few epochs on generated disc images, once per session."""
    from tiny_yolo import train_tiny_yolo

    return train_tiny_yolo(tmp_path_factory.mktemp("tiny_yolo"), epochs=30)


@pytest.fixture(scope="session")
def tiny_yolo_model(tiny_yolo):
    from napari_cellseg import load_model

    return load_model(tiny_yolo, device="cpu")


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, data.yaml): a YOLO11n detector trained for a few epochs on generated disc images in a
    Roboflow-layout dataset, once per session."""
    from tiny_detector import train_tiny_detector

    return train_tiny_detector(tmp_path_factory.mktemp("tiny_detector"))


@pytest.fixture(scope="session")
def tiny_detector_onnx(tiny_detector, tmp_path_factory) -> dict[str, Path]:
    """The tiny detector exported by ultralytics to ONNX: "static" (a fixed input of its imgsz) and "dynamic"."""
    import shutil

    from ultralytics import YOLO

    from tiny_detector import IMGSZ

    work = tmp_path_factory.mktemp("tiny_detector_onnx")
    out = {}
    for name, dynamic in (("static", False), ("dynamic", True)):
        copy = work / f"{name}.pt"  # ultralytics writes its export beside the file it loaded
        shutil.copyfile(tiny_detector[0], copy)
        out[name] = Path(YOLO(str(copy)).export(format="onnx", imgsz=IMGSZ, dynamic=dynamic, simplify=False,
                                                device="cpu", verbose=False))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_configure(config):
    os.environ.setdefault("YOLO_VERBOSE", "False")
