"""Contour refinement: a detector's instances keep their ids; their outlines follow a U-Net's foreground."""
import numpy as np
import pytest
from scipy import ndimage

from napari_cellseg import load_model, segment
from napari_cellseg._sample_data import load_sample
from napari_cellseg.core.progress import Progress
from napari_cellseg.pipeline.segment import run, segment_iter
from napari_cellseg.core.refine import ContourRefinement, refine_labels

from synthetic import disc_image


def _discs(shape=(120, 160), n=8, seed=3):
    _, labels = disc_image(shape, n=n, radius=(7, 10), seed=seed, gap=6)
    return labels


def test_outlines_move_to_the_foreground_within_reach_and_ids_stay():
    truth = _discs()
    shrunk = np.where(ndimage.grey_erosion(truth, size=3) == truth, truth, 0)  # one pixel too small
    foreground = (truth > 0).astype(np.float32) * 0.95
    refined, agreement, applied = refine_labels(shrunk, foreground, ContourRefinement(reach=2, min_agreement=0.8))
    assert applied and 0.8 < agreement < 1
    np.testing.assert_array_equal(refined, truth)


def test_outlines_shrink_to_the_foreground_but_no_instance_vanishes():
    truth = _discs()
    grown = ndimage.grey_dilation(truth, size=5)  # two pixels too large
    foreground = (truth > 0).astype(np.float32) * 0.9
    missing = 1
    foreground[truth == missing] = 0.1  # the student sees nothing where the detector found object 1
    refined, _, applied = refine_labels(grown, foreground, ContourRefinement(min_agreement=0.5))
    assert applied
    assert set(np.unique(refined)) == set(np.unique(grown))  # every instance is still there
    others = (truth > 0) & (truth != missing)
    np.testing.assert_array_equal(refined[others], truth[others])
    kept = refined == missing  # only its eroded core remains
    assert kept.any() and kept.sum() < (grown == missing).sum()


def test_shrink_sets_how_far_an_outline_may_retreat():
    truth = np.pad(_discs(), 4)  # away from the image's edge, where erosion stops
    grown = ndimage.grey_dilation(truth, size=5)  # two pixels too large
    foreground = (truth > 0).astype(np.float32) * 0.9
    one, _, _ = refine_labels(grown, foreground, ContourRefinement(min_agreement=0.5, shrink=1))
    two, _, _ = refine_labels(grown, foreground, ContourRefinement(min_agreement=0.5, shrink=2))
    np.testing.assert_array_equal(two, truth)
    assert (one > 0).sum() > (truth > 0).sum()  # one pixel of retreat leaves them a pixel too large
    np.testing.assert_array_equal(one[truth > 0], truth[truth > 0])


def test_foreground_beyond_reach_is_not_taken():
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1
    foreground = np.zeros((40, 40), np.float32)
    foreground[8:30, 8:22] = 0.9  # reaches 10 px below the object, 2 px elsewhere
    refined, _, _ = refine_labels(labels, foreground, ContourRefinement(reach=2, min_agreement=0))
    expected = np.zeros_like(labels)
    expected[8:22, 8:22] = 1
    np.testing.assert_array_equal(refined, expected)


def test_a_frame_where_the_models_disagree_keeps_the_detectors_masks():
    truth = _discs()
    foreground = np.roll(truth > 0, 40, axis=1).astype(np.float32)  # a different picture altogether
    refined, agreement, applied = refine_labels(truth, foreground)
    assert not applied and agreement < 0.9
    assert refined is truth


def test_thin_instances_are_kept_whole():
    labels = np.zeros((20, 20), np.int32)
    labels[5, 2:18] = 1  # one pixel wide: erosion would remove it
    labels[10:16, 4:10] = 2
    foreground = (labels > 0).astype(np.float32)
    refined, _, applied = refine_labels(labels, foreground, ContourRefinement(min_agreement=0))
    assert applied and (refined == 1).sum() == 16


def test_settings_are_checked():
    with pytest.raises(ValueError, match="fg_threshold"):
        ContourRefinement(fg_threshold=1.5)
    with pytest.raises(ValueError, match="reach"):
        ContourRefinement(reach=-1)
    with pytest.raises(ValueError, match="shrink"):
        ContourRefinement(shrink=0)
    with pytest.raises(ValueError, match="shape"):
        refine_labels(np.zeros((4, 4), np.int32), np.zeros((5, 4), np.float32))


class BrightPixelRefiner:
    """A stand-in U-Net: foreground where the normalised tile is bright, grown by one pixel.
    Small tiles, so a frame takes several."""

    def __init__(self):
        student = load_model("nuclei-student")
        self.info, self.device = student.info, student.device
        self.info.train_imgsz = 48
        self.calls = 0

    def probabilities(self, tile, augmented=False):
        self.calls += 1
        bright = ndimage.binary_dilation(tile[..., 0] > 128)
        return np.stack([bright.astype(np.float32)] * 3)


def test_segment_refines_every_frame_tile_by_tile_and_keeps_ids_scores_and_counts():
    frames = [disc_image((96, 128), n=5, radius=(6, 8), seed=s, gap=6) for s in (1, 2)]
    stack = np.stack([f[0] for f in frames])
    detector = load_model("otsu-watershed")
    plain = segment(stack, detector, refine=None)
    refiner = BrightPixelRefiner()
    progress = []
    result = run(segment_iter(stack, detector, refine=refiner, refinement=ContourRefinement(min_agreement=0.5)),
                 progress.append)
    assert refiner.calls >= 2 * 6  # 96x128 frames in 48-px tiles with overlap: several per frame
    refining = [p for p in progress if isinstance(p, Progress) and p.message.startswith("refining contours")]
    assert refining[-1].done == refining[-1].total and refining[-1].frame == 1
    for f, (_, truth) in enumerate(frames):
        grown = ndimage.binary_dilation(truth > 0)
        np.testing.assert_array_equal(result.labels[f] > 0, grown)  # the stand-in's foreground
        np.testing.assert_array_equal(np.unique(result.labels[f]), np.unique(plain.labels[f]))  # same ids
    np.testing.assert_array_equal(result.counts_per_frame(), plain.counts_per_frame())
    np.testing.assert_array_equal(result.objects["label"], plain.objects["label"])
    np.testing.assert_array_equal(result.objects["frame"], plain.objects["frame"])
    assert (result.objects["area"] > plain.objects["area"]).all()  # the table follows the new outlines
    info = result.metadata["parameters"]["refine"]
    assert info["refined_frames"] == [True, True] and info["min_agreement"] == 0.5


def test_refine_auto_follows_the_model_and_refine_must_be_a_student():
    image, _ = disc_image((64, 64), n=2)
    detector = load_model("otsu-watershed")
    assert detector.info.refine_with is None
    assert segment(image, detector).metadata["parameters"]["refine"] is None
    with pytest.raises(ValueError, match="U-Net student"):
        segment(image, detector, refine="otsu-watershed")


def test_a_refiner_checkpoint_carries_its_settings_and_runs_use_them(tmp_path):
    from napari_cellseg.backends import ModelLoadError, resolve_model
    from napari_cellseg.unet_student.model import compact_checkpoint

    source = resolve_model("nuclei-student")[1]
    settings = {"fg_threshold": 0.55, "reach": 2, "min_agreement": 0.3, "shrink": 2}
    compact_checkpoint(source, tmp_path / "refiner.pt", refinement=settings)
    refiner = load_model(tmp_path / "refiner.pt", device="cpu")
    assert refiner.refinement == ContourRefinement(**settings)
    image, _ = disc_image((64, 64), n=3, radius=(6, 8))
    detector = load_model("otsu-watershed")
    used = segment(image, detector, refine=refiner).metadata["parameters"]["refine"]
    assert {k: used[k] for k in settings} == settings
    given = segment(image, detector, refine=refiner, refinement=ContourRefinement(reach=0))
    assert given.metadata["parameters"]["refine"]["reach"] == 0  # the caller's settings win
    assert load_model("nuclei-student", device="cpu").refinement is None  # none stored: the defaults
    compact_checkpoint(source, tmp_path / "bad.pt", refinement={"fg_threshold": 2.0})
    with pytest.raises(ModelLoadError, match="refinement settings"):
        load_model(tmp_path / "bad.pt", device="cpu")


def test_the_named_nuclei_model_redraws_its_outlines_with_its_contour_unet_by_default():
    nuclei = load_model("nuclei", device="cpu")
    assert nuclei.info.refine_with == "nuclei-contours"
    image, truth = load_sample("small")
    refined = segment(image, nuclei)
    plain = segment(image, nuclei, refine=None)
    info = refined.metadata["parameters"]["refine"]
    assert info["model"].endswith("nuclei_unet_contours.pt") and info["refined_frames"] == [True]
    stored = load_model("nuclei-contours", device="cpu").refinement
    assert stored is not None and {k: info[k] for k in stored.as_dict()} == stored.as_dict()
    assert refined.n_objects == plain.n_objects and (refined.labels != plain.labels).any()
    assert plain.metadata["parameters"]["refine"] is None
    from napari_cellseg.pipeline.segment import companions_of

    assert "nuclei-contours" in companions_of(nuclei)  # loaded once, kept for the next run


def test_student_tta_averages_the_flips_maps_so_its_result_does_not_depend_on_a_flip():
    from napari_cellseg.backends import InferenceSettings
    from napari_cellseg.unet_student.data import model_input

    student = load_model("nuclei-student", device="cpu")
    image, _ = load_sample("small")
    tile = np.ascontiguousarray(model_input(image)[:128, :128])
    settings = InferenceSettings(zoom=1.0, conf=0.0, iou=0.7, max_det=3000)
    union = student.predict_tile_augmented(tile, settings).masks.any(axis=0)
    flipped = student.predict_tile_augmented(np.ascontiguousarray(tile[:, ::-1]), settings).masks.any(axis=0)
    plain = student.predict_tile(np.ascontiguousarray(tile[:, ::-1]), settings).masks.any(axis=0)
    assert union.sum() > 100
    assert (union != flipped[:, ::-1]).sum() <= 2  # the same up to float rounding
    assert (union != plain[:, ::-1]).sum() > (union != flipped[:, ::-1]).sum()  # one run alone differs more
    result = segment(image, student, tta=True)
    assert result.n_objects > 0 and result.metadata["parameters"]["tta"] is True


def test_with_tta_the_refiner_averages_the_flips_of_its_foreground_too():
    from napari_cellseg.unet_student.data import model_input

    refiner = load_model("nuclei-contours", device="cpu")
    image, _ = load_sample("small")
    tile = np.ascontiguousarray(model_input(image)[:96, :96])
    averaged = refiner.probabilities(tile, augmented=True)
    flips = [refiner.probabilities(tile), refiner.probabilities(np.ascontiguousarray(tile[:, ::-1]))[:, :, ::-1],
             refiner.probabilities(np.ascontiguousarray(tile[::-1]))[:, ::-1],
             refiner.probabilities(np.ascontiguousarray(tile[::-1, ::-1]))[:, ::-1, ::-1]]
    np.testing.assert_allclose(averaged, np.mean(flips, axis=0), atol=1e-5)
    assert np.abs(flips[0] - flips[1]).max() > 0.01  # the flips do differ: the mean is not one of them
    detector = load_model("otsu-watershed")
    plain = segment(image, detector, refine=refiner).metadata["parameters"]["refine"]
    augmented = segment(image, detector, refine=refiner, tta=True).metadata["parameters"]["refine"]
    assert plain["augmented"] is False and augmented["augmented"] is True


def test_large_frames_are_redrawn_in_windows_with_the_same_result():
    truth = _discs((200, 260), n=30, seed=5)
    grown = ndimage.grey_dilation(truth, size=3)
    rng = np.random.default_rng(0)
    foreground = np.clip((truth > 0) * 0.8 + rng.normal(0, 0.15, truth.shape), 0, 1).astype(np.float16)
    params = ContourRefinement(min_agreement=0.5)
    whole, _, _ = refine_labels(grown, foreground, params, window=4096)
    windowed, _, _ = refine_labels(grown, foreground, params, window=48, halo=24)
    assert (whole != grown).sum() > 100  # the outlines did move
    np.testing.assert_array_equal(windowed, whole)


def test_the_shipped_contour_unet_is_the_one_documented_with_the_settings_documented():

    from napari_cellseg.backends import MODELS_DIR

    refiner = load_model("nuclei-contours", device="cpu")
    card = (MODELS_DIR / "MODEL_CARD.md").read_text()  # the calibration record lives in the model card
    assert refiner.info.sha256 in card
    r = refiner.refinement
    assert f"`nuclei-contours`, {r.fg_threshold} / {r.reach} / {r.shrink} (chosen)" in card
    assert f"foreground threshold {r.fg_threshold},\nreach {r.reach} pixels, shrink {r.shrink} pixels" in card


class RecordingRefiner(BrightPixelRefiner):
    """The stand-in, recording the thread of each call; ``delay`` seconds per tile, ``fail`` raises."""

    def __init__(self, delay=0.0, fail=False):
        super().__init__()
        self.threads, self.delay, self.fail = [], delay, fail

    def probabilities(self, tile, augmented=False):
        import threading
        import time

        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the refiner broke")
        return super().probabilities(tile, augmented)


def test_the_first_frames_refiner_runs_beside_the_detector_with_the_same_result(monkeypatch):
    import napari_cellseg.pipeline.segment as pipeline

    frames = [disc_image((96, 128), n=5, radius=(6, 8), seed=s, gap=6) for s in (1, 2)]
    stack = np.stack([f[0] for f in frames])
    detector, settings = load_model("otsu-watershed"), ContourRefinement(min_agreement=0.5)
    beside = RecordingRefiner()
    result = segment(stack, detector, refine=beside, refinement=settings)
    per_frame = beside.calls // 2
    # frame 1 in the worker thread, frame 2 after the detector, in the caller's
    assert beside.threads[:per_frame] == ["napari-cellseg-refiner"] * per_frame
    assert "napari-cellseg-refiner" not in beside.threads[per_frame:]
    monkeypatch.setattr(pipeline, "CONCURRENT_REFINER_MAX_PIXELS", 0)  # everything in turn, in the caller's thread
    in_turn = RecordingRefiner()
    sequential = segment(stack, detector, refine=in_turn, refinement=settings)
    assert "napari-cellseg-refiner" not in in_turn.threads
    np.testing.assert_array_equal(result.labels, sequential.labels)
    assert result.metadata["parameters"]["refine"] == sequential.metadata["parameters"]["refine"]


def test_cancelling_a_run_stops_its_refiner_worker_and_the_workers_errors_reach_the_caller():
    import threading
    import time

    image, _ = disc_image((96, 128), n=5, radius=(6, 8), seed=1, gap=6)
    slow = RecordingRefiner(delay=0.2)
    runs = segment_iter(image, load_model("otsu-watershed"), refine=slow)
    next(runs)  # the run has started: so has the worker, on its first tile while the detector waits
    time.sleep(0.1)
    assert slow.threads == ["napari-cellseg-refiner"]
    runs.close()  # Cancel
    assert not any(t.name == "napari-cellseg-refiner" for t in threading.enumerate())
    time.sleep(0.5)
    assert slow.calls == 1  # stopped after its current tile, not run to the end
    with pytest.raises(RuntimeError, match="the refiner broke"):
        segment(image, load_model("otsu-watershed"), refine=RecordingRefiner(fail=True))
