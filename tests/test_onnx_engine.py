"""The ONNX Runtime engine gives the torch path's instances, and its cache is used only for its weights."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from napari_cellseg import load_model, segment  # noqa: E402
from napari_cellseg.core import onnx_cache  # noqa: E402
from napari_cellseg.core.backend import InferenceSettings  # noqa: E402
from napari_cellseg.unet_student.backend import UNetBackend  # noqa: E402
from napari_cellseg.yolo.backend import YoloBackend  # noqa: E402

from synthetic import disc_image  # noqa: E402
from tiny_yolo import with_calibration  # noqa: E402

TINY = (8, 16, 32, 64, 128)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(onnx_cache.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def both_engines(tiny_yolo):
    """The tiny YOLO11n-seg (built from yolo11n-seg.yaml, trained on generated discs) on each engine."""
    return YoloBackend(tiny_yolo, "cpu", engine="torch"), YoloBackend(tiny_yolo, "cpu", engine="onnx")


def _tile(shape=(128, 160), seed=5):
    from napari_cellseg.core.normalize import normalize_to_uint8

    image, _ = disc_image(shape, n=10, radius=(7, 12), seed=seed)
    return np.repeat(normalize_to_uint8(image)[..., None], 3, axis=-1)  # as the tiny model was trained


def _matched_ious(a, b):
    """IoU of each of a's masks with b's mask of the same rank by score (both sorted best first)."""
    ia, ib = np.argsort(-a.scores, kind="stable"), np.argsort(-b.scores, kind="stable")
    return np.array([(a.masks[i] & b.masks[j]).sum() / max(1, (a.masks[i] | b.masks[j]).sum())
                     for i, j in zip(ia, ib)]), ia, ib


@pytest.mark.parametrize("zoom", [1.0, 1.5, 0.75])
def test_onnx_gives_the_torch_paths_instances(both_engines, zoom):
    torch_model, onnx_model = both_engines
    assert (torch_model.engine, onnx_model.engine) == ("torch", "onnx")
    assert onnx_model.info == torch_model.info  # read back from the export's metadata
    tile = _tile()  # 160 px wide: padded to the stride at every zoom
    settings = InferenceSettings(zoom=zoom, conf=0.01, mask_threshold=0.5)
    a, b = torch_model.predict_tile(tile, settings), onnx_model.predict_tile(tile, settings)
    assert len(a) > 2 and len(b) == len(a)
    ious, ia, ib = _matched_ious(a, b)
    assert ious.min() >= 0.98 and ious.mean() >= 0.995
    np.testing.assert_allclose(b.scores[ib], a.scores[ia], atol=1e-4)
    np.testing.assert_allclose(b.boxes[ib], a.boxes[ia], atol=0.05)
    np.testing.assert_array_equal(b.class_ids[ib], a.class_ids[ia])
    soft_a, soft_b = torch_model.predict_tile_soft(tile, settings), onnx_model.predict_tile_soft(tile, settings)
    assert soft_b.masks.dtype == np.float32 and len(soft_b) == len(soft_a)
    np.testing.assert_allclose(soft_b.masks[ib], soft_a.masks[ia], atol=1e-3)


def test_the_whole_pipeline_gives_the_same_labels_on_both_engines(both_engines):
    from napari_cellseg.core.metrics import evaluate

    image, _ = disc_image((200, 300), n=20, radius=(7, 12), seed=5, dtype=np.uint16)  # tiled: 128 px tiles
    torch_model, onnx_model = both_engines
    a, b = segment(image, torch_model, conf=0.01), segment(image, onnx_model, conf=0.01)
    assert a.n_objects >= 1 and b.n_objects == a.n_objects
    assert evaluate(b.labels, a.labels, with_coco=False)["f1_50"] >= 0.99
    assert np.mean((a.labels > 0) == (b.labels > 0)) >= 0.999
    assert b.metadata["parameters"]["engine"] == "onnx" and a.metadata["parameters"]["engine"] == "torch"


def test_the_export_is_cached_beside_the_weights_and_checked_by_checksum(tmp_path, tiny_yolo):
    weights = tmp_path / "w.pt"
    weights.write_bytes(tiny_yolo.read_bytes())
    first = YoloBackend(weights, "cpu", engine="onnx")
    cached = sorted(tmp_path.glob("w.*.yolo.onnx"))
    assert len(cached) == 1 and first.info.sha256[:12] in cached[0].name
    assert onnx_cache.read_metadata(cached[0])["source_sha256"] == first.info.sha256
    mtime = cached[0].stat().st_mtime_ns
    assert YoloBackend(weights, "cpu", engine="onnx").engine == "onnx"
    assert cached[0].stat().st_mtime_ns == mtime  # loaded, not exported again

    # other weights: a file under their name that was made from other weights is not used
    from napari_cellseg.core.io import sha256_of

    with_calibration(weights, weights, conf=0.3)
    other = sha256_of(weights)
    forged = tmp_path / f"w.{other[:12]}.yolo.onnx"
    forged.write_bytes(cached[0].read_bytes())
    assert onnx_cache.open_cached(weights, other, "yolo", 1) is None
    reloaded = YoloBackend(weights, "cpu", engine="onnx")
    assert reloaded.info.sha256 == other and reloaded.info.conf == 0.3  # exported again from the new weights
    assert onnx_cache.read_metadata(forged)["source_sha256"] == other


def test_a_read_only_weights_folder_puts_the_export_in_the_user_cache(tmp_path, tiny_yolo, monkeypatch):
    weights = tmp_path / "models" / "w.pt"
    weights.parent.mkdir()
    weights.write_bytes(tiny_yolo.read_bytes())
    monkeypatch.setattr(onnx_cache.os, "access", lambda path, mode: Path(path) != weights.parent)
    assert YoloBackend(weights, "cpu", engine="onnx").engine == "onnx"
    assert not list(weights.parent.glob("*.onnx"))
    assert len(list((tmp_path / "cache" / "onnx").glob("w.*.yolo.onnx"))) == 1


def test_engine_choice_and_its_errors(tiny_yolo, monkeypatch):
    monkeypatch.setenv(onnx_cache.ENGINE_ENV, "torch")
    assert load_model(tiny_yolo, device="cpu").engine == "torch"
    monkeypatch.setenv(onnx_cache.ENGINE_ENV, "auto")
    assert load_model(tiny_yolo, device="cpu").engine == "onnx"  # the CPU default where onnxruntime is installed
    monkeypatch.setenv(onnx_cache.ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="unknown inference engine"):
        load_model(tiny_yolo, device="cpu")


def test_a_cached_model_loads_and_segments_without_importing_torch(tmp_path, tiny_yolo):
    weights = tmp_path / "w.pt"
    weights.write_bytes(tiny_yolo.read_bytes())
    YoloBackend(weights, "cpu", engine="onnx")  # exports
    code = ("import sys, numpy as np; from napari_cellseg import load_model, segment; "
            f"m = load_model({str(weights)!r}, device='auto'); "
            "r = segment(np.zeros((64, 64), np.uint8), m); "
            "assert m.engine == 'onnx', m.engine; "
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")])}
    if onnx_cache._cuda_driver_present():
        pytest.skip("a CUDA driver is present: 'auto' asks torch about the GPU")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def _tiny_unet(path: Path) -> Path:
    import torch

    from napari_cellseg.unet_student.model import build_unet, checkpoint_meta, save_checkpoint

    torch.manual_seed(0)
    model = build_unet(TINY).eval()
    for module in model.modules():  # BatchNorm far from the identity: ONNX Runtime folds it itself
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2)
    save_checkpoint(path, model, checkpoint_meta(model, zoom=1.0, tile=256,
                                                 refinement={"fg_threshold": 0.55, "reach": 2, "shrink": 2}))
    return path


@pytest.mark.parametrize("int8", ["0", "1"])
def test_the_unet_on_onnx_gives_the_torch_maps(tmp_path, monkeypatch, int8):
    monkeypatch.setenv("NAPARI_CELLSEG_INT8", int8)
    weights = _tiny_unet(tmp_path / "unet.pt")
    torch_model, onnx_model = UNetBackend(weights, "cpu", engine="torch"), UNetBackend(weights, "cpu", engine="onnx")
    assert onnx_model.engine == ("onnx-int8" if int8 == "1" else "onnx")
    assert onnx_model.info == torch_model.info and onnx_model.refinement == torch_model.refinement
    assert onnx_model.postprocess == torch_model.postprocess
    tile = _tile((100, 130))  # not a multiple of the stride: padded and cropped back
    a, b = torch_model.probabilities(tile), onnx_model.probabilities(tile)
    assert a.shape == b.shape == (3, 100, 130)
    if int8 == "0":
        np.testing.assert_allclose(b, a, atol=1e-5)
    else:  # 8 bits: close, not equal (the shipped refiner's effect is measured in docs/benchmarks.md)
        assert np.abs(b - a).mean() < 0.02
    # cached: loads again from the file, with the same settings
    again = UNetBackend(weights, "cpu", engine="onnx")
    assert again.engine == onnx_model.engine and again.refinement == torch_model.refinement
