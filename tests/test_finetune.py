import pytest

from napari_cellseg import load_model
from napari_cellseg.cli import main
from napari_cellseg.core.datasets import export_dataset
from napari_cellseg.pipeline.finetune import finetune_architecture, finetune_iter
from napari_cellseg.yolo.train import tile_dataset

from synthetic import disc_image


@pytest.fixture(scope="module")
def disc_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    samples = [(f"im{i}", *disc_image((200, 200), n=10, seed=50 + i)) for i in range(4)]
    return export_dataset(samples, out / "yolo", "yolo", val_fraction=0.25)


def test_dataset_is_tiled_to_the_model_scale(tmp_path, disc_dataset):
    data = tile_dataset(disc_dataset, 128, tmp_path / "tiles")
    train = list((tmp_path / "tiles" / "images" / "train").glob("*.png"))
    val = list((tmp_path / "tiles" / "images" / "val").glob("*.png"))
    assert len(train) == 3 * 4 and len(val) == 4  # 200 px -> 2 x 2 tiles of 128
    assert "val: images/val" in data.read_text()


def test_finetune_cli_writes_a_loadable_model_with_lineage(tmp_path, tiny_yolo, tiny_yolo_model, disc_dataset, capsys,
                                                           monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the run's temporary work folder goes
    out = tmp_path / "tuned.pt"
    assert main(["finetune", "--model", str(tiny_yolo), "--data", str(disc_dataset.parent), "--out", str(out),
                 "--epochs", "1", "-q"]) == 0
    tuned = load_model(out, device="cpu")
    assert tuned.info.train_imgsz == 128 and tuned.info.zoom == tiny_yolo_model.info.zoom
    assert tuned.info.extra["fine_tuned_from_sha256"] == tiny_yolo_model.info.sha256
    assert tuned.info.sha256 != tiny_yolo_model.info.sha256
    # the score threshold was calibrated on the dataset's validation image and is now the model's own
    calibration = tuned.info.extra["conf_calibration"]
    assert tuned.info.conf == calibration["conf"] == max(calibration["f1_50_by_conf"],
                                                         key=lambda c: (calibration["f1_50_by_conf"][c], -abs(c - 0.25)))
    assert len(calibration["images"]) == 1 and not calibration["tta"]
    # and one for test-time augmented runs, made with TTA on the same images
    calibration_tta = tuned.info.extra["conf_tta_calibration"]
    assert calibration_tta["tta"] and calibration_tta["images"] == calibration["images"]
    assert tuned.info.conf_tta == calibration_tta["conf"] == max(
        calibration_tta["f1_50_by_conf"], key=lambda c: (calibration_tta["f1_50_by_conf"][c], -abs(c - 0.25)))
    out = capsys.readouterr().out
    assert "score threshold " in out and "score threshold for test-time augmented runs" in out
    assert list(scratch.iterdir()) == []  # the tiles and ultralytics' run folder are gone


def test_cancel_stops_at_the_next_batch_and_keeps_weights(tmp_path, tiny_yolo, disc_dataset):
    out = tmp_path / "cancelled.pt"
    gen = finetune_iter(tiny_yolo, disc_dataset, out, epochs=50, batch=2, workdir=tmp_path / "w")
    progress = [next(gen) for _ in range(12)]  # past the first epoch (6 batches of 2)
    gen.close()
    assert progress[-1].epoch < 50
    assert any(p.get("metrics") is not None for p in progress)  # an epoch finished and reported its losses
    assert out.is_file() and load_model(out, device="cpu").info.task == "segment"


def test_finetune_refuses_a_missing_dataset(tmp_path, capsys):
    assert main(["finetune", "--model", "otsu-watershed", "--data", str(tmp_path), "--out", "x.pt"]) == 2
    assert "no data.yaml" in capsys.readouterr().err


def test_finetune_at_another_zoom_records_it_and_keeps_the_mask_calibration(tmp_path, tiny_yolo, tiny_yolo_model,
                                                                            disc_dataset):
    out = tmp_path / "zoomed.pt"
    gen = finetune_iter(tiny_yolo, disc_dataset, out, epochs=1, batch=4, zoom=0.5, workdir=tmp_path / "w")
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration:
        pass
    tuned = load_model(out, device="cpu")
    assert tuned.info.zoom == 0.5 != tiny_yolo_model.info.zoom
    assert tuned.info.mask_erosion == tiny_yolo_model.info.mask_erosion
    # 200 px images at zoom 0.5 and imgsz 128: tiles of 256 px, so one tile per image
    assert len(list((tmp_path / "w" / "tiles" / "images" / "train").glob("*.png"))) == 3
    # one optimiser step per batch: ultralytics' own default would accumulate to 64 images
    import yaml

    trainer_args = yaml.safe_load((tmp_path / "w" / "run" / "args.yaml").read_text())
    assert trainer_args["nbs"] == trainer_args["batch"] == 4


def test_architecture_follows_the_starting_model(tiny_yolo, tmp_path):
    from detectron2_style import detectron2_state, save_pth

    assert finetune_architecture(str(tiny_yolo)) == "yolo"
    assert finetune_architecture("nuclei") == "yolo"
    checkpoint = save_pth(detectron2_state(num_classes=1, width=16), tmp_path / "model_final.pth")
    assert finetune_architecture(str(checkpoint)) == "maskrcnn"
    assert finetune_architecture("nuclei", "maskrcnn") == "maskrcnn"


@pytest.mark.slow
def test_finetune_cli_trains_a_new_mask_rcnn(tmp_path, disc_dataset, capsys):
    out = tmp_path / "mrcnn.pth"
    assert main(["finetune", "--arch", "maskrcnn", "--data", str(disc_dataset.parent), "--out", str(out),
                 "--epochs", "1", "--batch", "2", "--imgsz", "96", "-q"]) == 0
    assert "maskrcnn model written" in capsys.readouterr().out
    model = load_model(out, device="cpu")
    assert model.info.backend == "maskrcnn" and model.config.min_size_test == 96


class _ScoredDiscs:
    """A backend that finds every true disc at score 0.8 and three spurious squares at 0.3."""

    device = "cpu"

    def __init__(self, truth):
        from napari_cellseg.core.backend import ModelInfo

        self.truth = truth
        self.info = ModelInfo(backend="stub", path="", sha256=None, task="segment", class_names={0: "cell"},
                              train_imgsz=256, zoom=1.0)

    def predict_tile(self, tile, settings):
        import numpy as np

        from napari_cellseg.core.tiling import TileDetections

        assert tile.shape[:2] == self.truth.shape  # one tile: the whole image
        masks = [self.truth == k for k in range(1, int(self.truth.max()) + 1)]
        free = [(y, x) for y in range(0, 190, 10) for x in range(0, 190, 10) if not self.truth[y:y + 10, x:x + 10].any()]
        for y, x in free[:3]:
            square = np.zeros(self.truth.shape, bool)
            square[y:y + 10, x:x + 10] = True
            masks.append(square)
        scores = [0.8] * (len(masks) - 3) + [0.3] * 3
        return TileDetections(np.array(masks), np.array(scores, np.float32), np.zeros(len(masks), int))


def test_score_threshold_calibration_drops_low_scoring_false_objects():
    from napari_cellseg.pipeline.finetune import calibrate_conf_iter
    from napari_cellseg.pipeline.segment import run

    image, truth = disc_image((200, 200), n=8, seed=61)
    progress = []
    calibration = run(calibrate_conf_iter(_ScoredDiscs(truth), [("im", image, truth)]), progress.append)
    assert progress == [(1, 1)]
    f1 = calibration["f1_50_by_conf"]
    assert f1[0.3] < 1.0 and f1[0.35] == f1[0.7] == 1.0  # the spurious squares go above 0.3
    assert calibration["conf"] == 0.35  # of the equally good thresholds, the nearest to 0.25
