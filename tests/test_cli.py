import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_cellseg.cli import main

from synthetic import disc_image
from tiny_yolo import with_calibration


def test_segment_writes_labels_table_and_provenance(tmp_path, tiny_yolo, capsys):
    image, _ = disc_image((160, 200), n=10, seed=7)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    png = (image / image.max() * 255).astype(np.uint8)
    Image.fromarray(png).save(tmp_path / "cells2.png")
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "cells.tif"), str(tmp_path / "cells2.png"), "--model", str(tiny_yolo),
                 "--out", str(out), "--conf", "0.01", "--mask-threshold", "0.52", "--device", "cpu", "-q"])
    assert code == 0
    for stem in ("cells", "cells2"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.shape == image.shape
        with open(out / f"{stem}_objects.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(np.unique(labels)) - (0 in labels)
        assert set(rows[0]) >= {"label", "centroid_y", "centroid_x", "bbox_y0", "area", "score", "class_id", "class_name"}
        provenance = json.loads((out / f"{stem}_provenance.json").read_text())
        assert provenance["model"]["sha256"] == __import__("hashlib").sha256(tiny_yolo.read_bytes()).hexdigest()
        assert provenance["parameters"]["conf"] == 0.01 and provenance["parameters"]["mask_threshold"] == 0.52
        assert provenance["napari_cellseg_version"]
    assert not [p for p in os.listdir(out) if ".part" in p]  # atomic writes leave no temporaries


def test_stack_output_keeps_the_stack_shape(tmp_path, tiny_yolo):
    stack = np.stack([disc_image((96, 96), n=4, seed=s)[0] for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", stack)
    assert main(["segment", str(tmp_path / "movie.tif"), "--model", str(tiny_yolo), "--out", str(tmp_path),
                 "--conf", "0.01", "-q"]) == 0
    labels = tifffile.imread(tmp_path / "movie_labels.tif")
    assert labels.shape == stack.shape
    with open(tmp_path / "movie_counts.csv") as fh:
        counts = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in counts] == [0, 1, 2]
    assert [int(r["count"]) for r in counts] == [len(set(np.unique(f)) - {0}) for f in labels]


def test_diameter_sets_the_scale_and_off_keeps_the_models(tmp_path, tiny_yolo):
    with_calibration(tiny_yolo, tmp_path / "sized.pt", object_diameter=40.0)
    tifffile.imwrite(tmp_path / "cells.tif", disc_image((160, 200), n=10, seed=7)[0])
    # 128 px network input; 20 px objects shown at 40: zoom 2; off: the default of a checkpoint from plain
    # ultralytics, its predict geometry (the 200 px long side fitted to 128 px, one pass)
    for diameter, tile, zoom in (("20", 64, 2.0), ("off", 200, 128 / 200)):
        out = tmp_path / diameter
        assert main(["segment", str(tmp_path / "cells.tif"), "--model", str(tmp_path / "sized.pt"), "--out", str(out),
                     "--diameter", diameter, "--conf", "0.01", "--device", "cpu", "-q"]) == 0
        provenance = json.loads((out / "cells_provenance.json").read_text())
        parameters = provenance["parameters"]
        assert parameters["tile"] == tile and parameters["diameter"] == (None if diameter == "off" else 20.0)
        assert parameters["zoom"] == provenance["summary"]["zoom"] == zoom


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, m: [str(d / "missing.tif"), "--model", m], "no such file"),
        (lambda d, m: [str(d / "notes.txt"), "--model", m], "unsupported file type"),
        (lambda d, m: [str(d / "ok.tif"), "--model", str(d / "nope.pt")], "no such model file"),
        (lambda d, m: [str(d / "ok.tif"), "--model", str(d / "notes.txt")], "not a model checkpoint"),
        (lambda d, m: [str(d / "tiny.tif"), "--model", m], "too small"),
        (lambda d, m: [str(d / "ok.tif"), "--model", m, "--conf", "3"], "conf must be in"),
        (lambda d, m: [str(d / "ok.tif"), "--model", m, "--diameter", "-2"], "diameter must be a positive number"),
        (lambda d, m: [str(d / "ok.tif"), "--model", m, "--diameter", "12", "--zoom", "2"], "give one of zoom"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, tiny_yolo, capsys, make_args, message):
    (tmp_path / "notes.txt").write_text("hello")
    tifffile.imwrite(tmp_path / "ok.tif", disc_image((64, 64), n=2)[0])
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((1, 1), np.uint8))
    code = main(["segment", *make_args(tmp_path, str(tiny_yolo)), "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("napari-cellseg: error:") and message in err[0]


def test_rerun_skips_finished_outputs_unless_overwrite(tmp_path, capsys):
    image, _ = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "a.tif", image)
    args = ["segment", str(tmp_path / "*.tif"), "--model", "otsu-watershed", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    labels = tmp_path / "o" / "a_labels.tif"
    stamp = labels.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out and labels.stat().st_mtime_ns == stamp
    assert main(args + ["--overwrite"]) == 0
    assert labels.stat().st_mtime_ns != stamp


def test_full_disk_leaves_no_partial_output_and_one_line(tmp_path, capsys, monkeypatch):
    import errno

    image, _ = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "a.tif", image)
    out = tmp_path / "out"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", no_space)
    code = main(["segment", str(tmp_path / "a.tif"), "--model", "otsu-watershed", "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left" in err[0]
    assert list(out.iterdir()) == []  # the temporary file was removed


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    image, _ = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "a.tif", image)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["segment", str(tmp_path / "a.tif"), "--model", "otsu-watershed", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot create output folder" in err[0]


def test_unexpected_failures_are_one_line_too(tmp_path, capsys, monkeypatch):
    image, _ = disc_image((64, 64), n=3)
    tifffile.imwrite(tmp_path / "a.tif", image)

    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr("napari_cellseg.pipeline.batch.segment_file", boom)
    code = main(["segment", str(tmp_path / "a.tif"), "--model", "otsu-watershed", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "internal error: RuntimeError: kernel exploded" in err[0]


def test_the_default_model_refines_its_contours_and_no_refine_keeps_its_own(tmp_path):
    from napari_cellseg._sample_data import load_sample

    image, _ = load_sample("small")
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    refine = {}
    for flag in ([], ["--no-refine"]):
        out = tmp_path / ("plain" if flag else "refined")
        assert main(["segment", str(tmp_path / "nuclei.tif"), "--out", str(out), "--device", "cpu", "-q", *flag]) == 0
        refine[bool(flag)] = json.loads((out / "nuclei_provenance.json").read_text())["parameters"]["refine"]
    assert refine[False]["model"].endswith("nuclei_unet_contours.pt") and refine[False]["refined_frames"] == [True]
    assert refine[True] is None


def test_a_light_image_goes_to_the_bright_field_model_and_no_bright_field_keeps_the_default(tmp_path):
    from napari_cellseg._sample_data import load_sample

    image, _ = load_sample("small")
    tifffile.imwrite(tmp_path / "stained.tif", (image.max() - image).astype(image.dtype))
    used = {}
    for flag in ([], ["--no-bright-field"]):
        out = tmp_path / ("kept" if flag else "switched")
        assert main(["segment", str(tmp_path / "stained.tif"), "--out", str(out), "--device", "cpu", "-q",
                     "--no-refine", *flag]) == 0
        provenance = json.loads((out / "stained_provenance.json").read_text())
        used[bool(flag)] = (Path(provenance["model"]["path"]).name, provenance["parameters"]["bright_field_switch"])
    assert used[False][0] == "nuclei_yolo11n_seg_brightfield.pt"
    assert used[False][1]["model"].endswith("nuclei_yolo11n_seg.pt")
    assert used[True] == ("nuclei_yolo11n_seg.pt", None)


def test_help_imports_no_heavy_library():
    """`napari-cellseg --help` stays fast: the commands import numpy, torch and the rest inside their run."""
    import subprocess
    import sys

    code = ("import sys; from napari_cellseg.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('numpy', 'torch', 'ultralytics', 'napari', 'qtpy', 'tqdm', 'skimage') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
