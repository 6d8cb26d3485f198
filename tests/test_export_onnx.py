"""``napari-cellseg export-onnx`` (yolo/export_onnx.py): a detector's .pt exported by ultralytics with the plugin's
calibration (zoom, conf, object diameter) in one metadata entry, which onnx-detect reads; against the .pt itself
run through the same CLI at its defaults."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.cli import main

from synthetic import disc_image
from tiny_detector import IMGSZ, match_boxes
from tiny_yolo import with_calibration

ZOOM, CONF, DIAMETER = 1.5, 0.1, 24.0  # not the defaults (1, 0.25, none): the export must carry them


@pytest.fixture(scope="session")
def calibrated_detector(tiny_detector, tmp_path_factory) -> Path:
    """The session's tiny detector with a napari-cellseg calibration as finetune --task detect stores it."""
    work = tmp_path_factory.mktemp("calibrated_detector")
    return with_calibration(tiny_detector[0], work / "calibrated.pt", zoom=ZOOM, conf=CONF, object_diameter=DIAMETER)


@pytest.fixture(scope="session")
def exported(calibrated_detector, tmp_path_factory) -> dict[str, Path]:
    """export-onnx through the CLI: "dynamic" (the default, beside the .pt) and "fixed" (--out)."""
    fixed = tmp_path_factory.mktemp("export_onnx") / "fixed.onnx"
    assert main(["export-onnx", str(calibrated_detector)]) == 0
    assert main(["export-onnx", str(calibrated_detector), "--fixed", "--out", str(fixed)]) == 0
    return {"dynamic": calibrated_detector.with_suffix(".onnx"), "fixed": fixed}


def _image(tmp_path) -> Path:
    """A 200 x 260 RGB PNG of discs: several tiles at zoom 1.5 (tiles of 128 / 1.5 image pixels)."""
    from napari_cellseg.core.io import write_image

    image, _ = disc_image((200, 260), n=24, radius=(7, 12), seed=905, dtype=np.uint8)
    path = tmp_path / "cells.png"
    write_image(path, np.repeat(image[..., None], 3, axis=-1))
    return path


def _cli_boxes(image: Path, model: Path, out: Path, *extra: str):
    """(boxes x0 y0 x1 y1, scores, provenance) of 'napari-cellseg segment' at the model's defaults."""
    assert main(["segment", str(image), "--model", str(model), "--out", str(out), "--device", "cpu", "-q",
                 *extra]) == 0
    with open(out / f"{image.stem}_objects.csv") as table:
        rows = list(csv.DictReader(table))
    boxes = np.array([[float(r[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")] for r in rows]).reshape(-1, 4)
    scores = np.array([float(r["score"]) for r in rows])
    return boxes, scores, json.loads((out / f"{image.stem}_provenance.json").read_text())


def test_the_export_carries_the_calibration_and_keeps_ultralytics_metadata(calibrated_detector, exported, capsys):
    import onnx

    from napari_cellseg.core.io import sha256_of
    from napari_cellseg.yolo.export_onnx import CALIBRATION_KEY

    meta = {p.key: p.value for p in onnx.load(str(exported["dynamic"])).metadata_props}
    assert "napari_cellseg" not in meta  # the key of the plugin's private cache files, which onnx-detect refuses
    assert {"task", "names", "stride", "imgsz"} <= set(meta) and meta["task"] == "detect"
    entry = json.loads(meta[CALIBRATION_KEY])
    assert entry["zoom"] == ZOOM and entry["conf"] == CONF and entry["object_diameter"] == DIAMETER
    assert entry["source_sha256"] == sha256_of(calibrated_detector) and entry["plugin_version"]
    fixed = onnx.load(str(exported["fixed"]))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, IMGSZ, IMGSZ]
    assert main(["export-onnx", str(calibrated_detector), "--out", str(exported["dynamic"])]) == 0
    printed = capsys.readouterr().out
    assert str(exported["dynamic"]) in printed and f"zoom {ZOOM:g}, conf {CONF:g}" in printed


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
@pytest.mark.parametrize("diameter", ["auto", "off"])
def test_the_export_gives_the_pt_boxes_at_its_defaults(calibrated_detector, exported, kind, diameter, tmp_path):
    """The .onnx and the .pt through 'napari-cellseg segment', no --zoom or --conf: the same boxes and scores,
    and the .onnx's provenance shows the .pt's zoom and conf. At the default diameter ('auto': the model's
    reference size brings the measured object size to it) and at the model's own scale ('off')."""
    image = _image(tmp_path)
    extra = () if diameter == "auto" else ("--diameter", "off")
    pt_boxes, pt_scores, pt_prov = _cli_boxes(image, calibrated_detector, tmp_path / "pt", *extra)
    onnx_boxes, onnx_scores, onnx_prov = _cli_boxes(image, exported[kind], tmp_path / "onnx", *extra)
    assert onnx_prov["model"]["backend"] == "onnx-detect"
    for prov in (pt_prov, onnx_prov):
        assert prov["parameters"]["conf"] == CONF
        assert prov["model"]["zoom"] == ZOOM and prov["model"]["object_diameter"] == DIAMETER
        assert prov["summary"]["reference_diameter"] == DIAMETER
    # the same scale (under 'auto' from the first pass's boxes, float32 rounding apart) and tiles
    np.testing.assert_allclose(onnx_prov["parameters"]["zoom"], pt_prov["parameters"]["zoom"], rtol=1e-5)
    if diameter == "off":
        assert onnx_prov["parameters"]["zoom"] == pt_prov["parameters"]["zoom"] == ZOOM
    for key in ("scale_source", "tile", "overlap", "imgsz"):
        assert onnx_prov["parameters"][key] == pt_prov["parameters"][key], key
    assert onnx_prov["model"]["extra"]["calibration_from"] == "napari_cellseg_calibration"
    assert len(onnx_scores) == len(pt_scores) >= 5
    pairs = match_boxes(onnx_boxes, pt_boxes, min_iou=0.99)
    assert len(pairs) == len(pt_scores)
    np.testing.assert_allclose([onnx_scores[i] for i, _ in pairs], [pt_scores[j] for _, j in pairs], atol=1e-3)
    print(f"{kind}, diameter {diameter}: {len(pt_scores)} boxes each, zoom {pt_prov['parameters']['zoom']:.4f}")


def test_a_plain_export_still_runs_at_zoom_1_and_the_default_conf(tiny_detector_onnx):
    from napari_cellseg import load_model

    info = load_model(tiny_detector_onnx["dynamic"], device="cpu").info
    assert (info.zoom, info.conf, info.object_diameter) == (1.0, 0.25, None)
    assert info.extra["calibration_from"] is None and not info.notes


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not JSON"), ("[1.5, 0.1]", "not a JSON object"), ('{"zoom": 0, "conf": 0.1}', "zoom 0"),
    ('{"zoom": 1.5, "conf": 2}', "conf 2"), ('{"zoom": "big", "conf": 0.1}', "zoom 'big'"),
    ('{"conf": 0.1}', "zoom None")])
def test_a_malformed_entry_is_a_note_and_the_defaults(exported, tmp_path, text, problem):
    import onnx

    from napari_cellseg import load_model, segment
    from napari_cellseg.yolo.export_onnx import CALIBRATION_KEY

    model = onnx.load(str(exported["dynamic"]))
    for entry in model.metadata_props:
        if entry.key == CALIBRATION_KEY:
            entry.value = text
    path = tmp_path / "malformed.onnx"
    onnx.save(model, str(path))
    loaded = load_model(path, device="cpu")
    assert (loaded.info.zoom, loaded.info.conf, loaded.info.object_diameter) == (1.0, 0.25, None)
    assert loaded.info.extra["calibration_from"] is None
    assert len(loaded.info.notes) == 1 and CALIBRATION_KEY in loaded.info.notes[0] and problem in loaded.info.notes[0]
    image, _ = disc_image((IMGSZ, IMGSZ), n=6, radius=(7, 12), seed=906, dtype=np.uint8)
    result = segment(np.repeat(image[..., None], 3, axis=-1), loaded)
    assert any("malformed" in w for w in result.warnings)


def test_a_segmentation_checkpoint_or_another_file_is_refused_in_one_line(tmp_path, capsys):
    from napari_cellseg.backends import MODELS_DIR, NAMED_MODELS

    segmentation = MODELS_DIR / NAMED_MODELS["nuclei"]  # the shipped YOLO11n-seg
    code = main(["export-onnx", str(segmentation), "--out", str(tmp_path / "seg.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "segmentation checkpoint" in err
    assert not (tmp_path / "seg.onnx").exists()
    other = tmp_path / "notes.pt"
    other.write_bytes(b"not a checkpoint")
    assert main(["export-onnx", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a model checkpoint" in err
    assert main(["export-onnx", str(tmp_path / "missing.pt")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_an_output_named_like_a_cache_file_is_refused(calibrated_detector, tmp_path, capsys):
    target = tmp_path / "best.0123456789ab.yolo.onnx"
    assert main(["export-onnx", str(calibrated_detector), "--out", str(target)]) == 2
    assert "cached exports" in capsys.readouterr().err and not target.exists()
