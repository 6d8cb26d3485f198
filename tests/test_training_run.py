"""A checkpoint's ultralytics run folder (issue 29): args.yaml, results.csv and the curve pictures read back
(core.training_run), shown in Segment cells' "Training run" section and kept in the provenance.

The run folders are real: those ultralytics wrote while training the session's tiny detector and tiny
segmentation model. The best epoch is checked against ultralytics' own record of it (``train_metrics`` in
best.pt), the table against results.csv read with the csv module, the picture against ultralytics' own
``plot_results``."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.core.training_run import (best_epoch, metric_key, read_results_csv, read_training_run,
                                              run_folder_of, training_run_record)

from napari_path import open_widget
from tiny_detector import disc_samples


def _csv_columns(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name.strip(): [float(row[i]) for row in rows[1:]] for i, name in enumerate(rows[0])}


def _ultralytics_best(checkpoint: Path) -> dict:
    """ultralytics' own record of the epoch it kept as best.pt: its validation metrics and fitness."""
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=False)["train_metrics"]


@pytest.fixture(scope="session")
def detector_run(tiny_detector, tmp_path_factory) -> Path:
    """A copy of the tiny detector's run folder (runs/<name>/weights/best.pt), with the results.png that
    ultralytics' own plot_results draws from its results.csv (training ran with plots=False: no font
    offline)."""
    from ultralytics.utils.plotting import plot_results

    folder = tmp_path_factory.mktemp("runs") / "detect" / "train"
    shutil.copytree(tiny_detector[0].parents[1], folder)
    plot_results(file=folder / "results.csv")
    assert (folder / "results.png").is_file()
    return folder


def test_the_detector_s_run_folder_reads_back_as_ultralytics_wrote_it(detector_run):
    run = read_training_run(detector_run / "weights" / "best.pt")
    assert run is not None and run.folder == detector_run.resolve() and not run.notes
    assert run_folder_of(detector_run / "weights" / "last.pt") == detector_run.resolve()
    # the table: every column of results.csv, as the csv module reads it
    expected = _csv_columns(detector_run / "results.csv")
    assert run.columns == expected
    assert run.epochs == expected["epoch"] and run.n_rows == len(expected["epoch"]) == 60
    assert "train/box_loss" in run.loss_columns() and "val/box_loss" in run.loss_columns()
    assert run.metric_columns() == [f"metrics/{m}(B)" for m in ("precision", "recall", "mAP50", "mAP50-95")]
    # the arguments: args.yaml as written (those tests/tiny_detector.py trained with)
    import yaml

    args = yaml.safe_load((detector_run / "args.yaml").read_text())
    assert run.args == args and run.essentials()["imgsz"] == 128 and run.essentials()["epochs"] == 60
    # the best epoch: the one ultralytics kept as best.pt, with the metrics it recorded for it
    ours = _ultralytics_best(detector_run / "weights" / "best.pt")
    assert ours["fitness"] > 0
    assert run.best["fitness"] == pytest.approx(ours["fitness"], abs=1e-6)
    for metric in ("precision", "recall", "mAP50", "mAP50-95"):
        assert run.best[f"{metric}(B)"] == pytest.approx(ours[f"metrics/{metric}(B)"], abs=1e-6)
    row = int(np.argmax(expected["metrics/mAP50-95(B)"]))
    assert run.best["epoch"] == expected["epoch"][row]
    assert run.images == [detector_run.resolve() / "results.png"]
    # what the provenance keeps
    record = training_run_record(detector_run / "weights" / "best.pt")
    assert record["folder"] == str(detector_run.resolve()) and record["imgsz"] == 128
    assert record["epochs"] == 60 and record["best"] == run.best
    assert f"mAP50-95 {run.best['mAP50-95(B)']:.3g}" in run.describe()


def test_a_segmentation_run_s_best_epoch_counts_boxes_and_masks(tiny_yolo):
    """ultralytics' fitness for a segmentation model is the boxes' mAP50-95 plus the masks'."""
    run = read_training_run(tiny_yolo)
    expected = _csv_columns(tiny_yolo.parents[1] / "results.csv")
    assert run.columns == expected
    best_pt = tiny_yolo.parent / "best.pt"
    ours = _ultralytics_best(best_pt)
    assert run.best["fitness"] == pytest.approx(ours["fitness"], abs=1e-6)
    for kind in ("B", "M"):
        for metric in ("precision", "recall", "mAP50", "mAP50-95"):
            assert run.best[f"{metric}({kind})"] == pytest.approx(ours[f"metrics/{metric}({kind})"], abs=1e-6)
    assert "masks" in run.describe_best() and "masks mAP50-95" in run.headline()


def test_models_without_a_run_folder_have_none(tmp_path, tiny_detector):
    from napari_cellseg.backends import MODELS_DIR

    copied = tmp_path / "best.pt"
    shutil.copy(tiny_detector[0], copied)
    for checkpoint in (MODELS_DIR / "nuclei_yolo11n_seg.pt", copied, tmp_path / "missing.pt", "nuclei", None, ""):
        assert run_folder_of(checkpoint) is None and training_run_record(checkpoint) is None
    assert read_training_run(copied) is None


def _fake_run(root: Path, results: str | bytes | None, args: str | None = "epochs: 3\nimgsz: 64\n") -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "best.pt").write_bytes(b"not read")
    if results is not None:
        path = root / "results.csv"
        path.write_bytes(results if isinstance(results, bytes) else results.encode())
    if args is not None:
        (root / "args.yaml").write_text(args)
    return root / "weights" / "best.pt"


def test_older_versions_padded_headers_and_names(tmp_path):
    header = ["               epoch", "      train/box_loss", "   metrics/precision", "      metrics/recall",
              "     metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]
    rows = [[1, 0.9, 0.5, 0.4, 0.3, 0.1], [2, 0.8, 0.6, 0.5, 0.45, 0.2], [3, 0.7, 0.55, 0.5, 0.4, 0.15]]
    text = ",".join(header) + "\n" + "\n".join(",".join(f"{v:>20}" for v in row) for row in rows) + "\n"
    run = read_training_run(_fake_run(tmp_path / "run", text))
    assert list(run.columns) == [h.strip() for h in header] and not run.notes
    assert run.best == {"epoch": 2.0, "fitness": 0.2, "precision(B)": 0.6, "recall(B)": 0.5, "mAP50(B)": 0.45,
                        "mAP50-95(B)": 0.2}
    assert metric_key(" metrics/mAP50-95(M) ") == "mAP50-95(M)" and metric_key("val/seg_loss") is None


@pytest.mark.parametrize("content, note", [
    (None, "no results.csv in the run folder"),
    ("", "results.csv is empty"),
    (b"\xff\xfe\x00garbage", "results.csv could not be read"),
    ("epoch,metrics/mAP50-95(B)\n1,0.1\n2,oops\n3,0.3,7\n4,0.2\n", "results.csv: 2 malformed line(s) skipped (line 3, 4)"),
    ("epoch,metrics/mAP50-95(B)\nx,y\n", "results.csv has no epoch rows that could be read"),
    ("epoch,train/box_loss\n1,0.5\n", "results.csv has no validation metrics"),
])
def test_a_missing_or_malformed_results_csv_is_a_note(tmp_path, content, note):
    run = read_training_run(_fake_run(tmp_path / "run", content))
    assert run is not None and any(n.startswith(note) for n in run.notes), run.notes
    assert note in run.describe() or any(note in n for n in run.notes)
    if isinstance(content, str) and "0.3" in content:  # the good rows are kept
        assert run.columns["epoch"] == [1.0, 4.0] and run.best["epoch"] == 4.0


def test_a_broken_args_yaml_is_a_note(tmp_path):
    run = read_training_run(_fake_run(tmp_path / "run", "epoch,metrics/mAP50(B)\n1,0.5\n", args="epochs: [1, 2\n"))
    (note,) = run.notes
    assert run.args == {} and note.startswith("args.yaml could not be read (ParserError: ") and "line 2" in note
    assert run.best["epoch"] == 1.0 and run.best["fitness"] == 0.5  # mAP50 where no mAP50-95 was logged
    assert best_epoch({}) is None and read_results_csv(tmp_path / "none.csv")[1]


def test_the_segment_provenance_keeps_the_training_run(detector_run):
    from napari_cellseg import segment

    image = next(disc_samples(1, seed=930))[1][..., 0]
    result = segment(image, str(detector_run / "weights" / "best.pt"), device="cpu")
    expected = read_training_run(detector_run / "weights" / "best.pt")
    assert result.summary.training_run == expected.record()
    assert result.metadata["summary"]["training_run"]["best"] == expected.best
    assert segment(image, "otsu-watershed").summary.training_run is None


# the napari path: Segment cells as napari builds it from the manifest

def _hidden(panel) -> bool:
    return panel.native.isHidden()


def _choose(widget, checkpoint) -> None:
    widget.model.value = str(checkpoint)


@pytest.mark.gui
def test_choosing_a_model_from_a_run_folder_shows_its_training_run(qtbot, make_napari_viewer, detector_run):
    from napari_cellseg.widgets._layers import META_KEY
    from napari_cellseg.widgets._training_run import PICTURE_ROLE

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "segment")
    panel = widget.training_run
    assert _hidden(panel)  # the shipped model chosen first has no run folder
    _choose(widget, detector_run / "weights" / "best.pt")
    assert not _hidden(panel) and panel.run.folder == detector_run.resolve()
    expected = _csv_columns(detector_run / "results.csv")
    # the curves, from results.csv, in the plugin's themed plots
    assert set(panel.losses.lines) == {c for c in expected if "loss" in c}
    assert set(panel.metrics.lines) == {c for c in expected if c.startswith("metrics/")}
    x, y = panel.metrics.lines["metrics/mAP50-95(B)"]
    assert x == expected["epoch"] and y == expected["metrics/mAP50-95(B)"]
    assert panel.losses.drawn.wait(30) and panel.metrics.drawn.wait(30)
    # the text: the essential arguments and the best epoch; the title says the best epoch at a glance
    best = panel.run.best
    assert "epochs 60" in panel.text.value and "imgsz 128" in panel.text.value
    assert f"best epoch {best['epoch']:g} of 60" in panel.text.value
    assert f"mAP50-95 {best['mAP50-95(B)']:.3g}" in panel.toggle.text
    # the pictures: a chooser over the run's PNGs, one opened as a layer marked as ours, once
    assert panel.picture_choice.value == str(detector_run.resolve() / "results.png")
    assert not panel.picture._pixmap.isNull()
    n_layers = len(viewer.layers)
    layer = panel.add_picture_layer()
    assert layer.metadata[META_KEY]["role"] == PICTURE_ROLE and layer.rgb
    assert panel.picture_choice.value == str(detector_run.resolve() / "results.png")  # kept across layer events
    layer.name = "my curves"
    assert panel.add_picture_layer().unique_id == layer.unique_id  # (napari hands plugins proxies of its layers)
    assert len(viewer.layers) == n_layers + 1, list(viewer.layers)
    # another model without a run folder: the section goes, no error
    widget.model.combo.value = "nuclei"
    assert _hidden(panel) and panel.run is None and not panel.metrics.lines
    assert "could not be read" not in widget.status.value


@pytest.mark.gui
def test_a_malformed_results_csv_shows_a_note_not_an_error(qtbot, make_napari_viewer, tmp_path, detector_run):
    folder = tmp_path / "runs" / "detect" / "broken"
    shutil.copytree(detector_run, folder)
    lines = (folder / "results.csv").read_text().splitlines()
    (folder / "results.csv").write_text("\n".join([lines[0], lines[1], "1,2,not,a,number", *lines[2:5]]) + "\n")
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "segment")
    _choose(widget, folder / "weights" / "best.pt")
    panel = widget.training_run
    assert not _hidden(panel) and "results.csv: 1 malformed line(s) skipped (line 3)" in panel.text.value
    assert panel.metrics.lines["metrics/mAP50-95(B)"][0] == [1.0, 2.0, 3.0, 4.0]
    (folder / "results.csv").write_bytes(b"")
    widget.model.combo.value = "nuclei"
    _choose(widget, folder / "weights" / "best.pt")
    assert not _hidden(panel) and "results.csv is empty" in panel.text.value
    assert not panel.losses.lines and not panel.metrics.lines
    assert panel.run.images == [folder.resolve() / "results.png"]
