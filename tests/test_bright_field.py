"""Images with a light background (histology, bright-field) go to a model's bright-field specialist."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic import disc_image

from napari_cellseg import load_model, segment
from napari_cellseg._sample_data import load_sample
from napari_cellseg.core.normalize import bright_background


def light(image: np.ndarray) -> np.ndarray:
    """Dark objects on a light background: the image inverted within its own range."""
    return (int(image.max()) + int(image.min()) - image.astype(np.int64)).astype(image.dtype)


def detector_with_specialist():
    """Two classical detectors told apart by their paths; the first names the second as its specialist."""
    detector, specialist = load_model("otsu-watershed"), load_model("otsu-watershed")
    specialist.info = replace(specialist.info, path="bright-field specialist")
    detector.info = replace(detector.info, path="detector", bright_field_with="specialist")
    from napari_cellseg.pipeline.segment import companions_of

    companions_of(detector)["specialist"] = specialist  # as if loaded by name before
    return detector, specialist


def test_fluorescence_is_dark_and_histology_or_bright_field_light():
    image, _ = disc_image((128, 128), n=8)  # uint16, bright discs on black
    assert not bright_background(image[..., None])
    assert bright_background(light(image)[..., None])
    stain = np.empty((128, 128, 3), np.uint8)
    stain[:] = (225, 200, 230)  # pale pink-violet background
    stain[disc_image((128, 128), n=20, radius=(8, 12), seed=3)[1] > 0] = (90, 40, 150)  # dark violet nuclei
    assert bright_background(stain)
    assert not bright_background(255 - stain)
    # judged on the normalised image: a dim 16-bit fluorescence image is still dark
    assert not bright_background((image // 50)[..., None])


def test_a_light_image_is_segmented_by_the_specialist_and_a_dark_one_by_the_model():
    detector, specialist = detector_with_specialist()
    image, _ = disc_image((128, 128), n=6)
    dark = segment(image, detector)
    assert dark.metadata["model"]["path"] == "detector"
    assert dark.metadata["parameters"]["bright_field_switch"] is None
    switched = segment(light(image), detector)
    assert switched.metadata["model"]["path"] == "bright-field specialist"
    assert switched.metadata["parameters"]["bright_field_switch"] == {
        "model": "detector", "sha256": detector.info.sha256, "reason": "light background"}
    kept = segment(light(image), detector, bright_field=None)  # switched off: the model itself
    assert kept.metadata["model"]["path"] == "detector" and kept.metadata["parameters"]["bright_field_switch"] is None
    given = segment(light(image), load_model("otsu-watershed"), bright_field=specialist)  # any model, given
    assert given.metadata["model"]["path"] == "bright-field specialist"


def test_a_model_without_a_specialist_runs_everything_itself_and_a_stack_is_judged_on_its_first_frame():
    plain = load_model("otsu-watershed")
    image, _ = disc_image((96, 96), n=4)
    assert plain.info.bright_field_with is None
    assert segment(light(image), plain).metadata["parameters"]["bright_field_switch"] is None
    detector, _ = detector_with_specialist()
    stack = np.stack([light(image), image])
    result = segment(stack, detector)
    assert result.metadata["model"]["path"] == "bright-field specialist" and result.stack_shape == (2,)
    assert segment(stack[::-1], detector).metadata["model"]["path"] == "detector"


def test_a_missing_specialist_is_a_clear_error_before_any_work(tmp_path):
    from napari_cellseg.backends import ModelLoadError

    detector = load_model("otsu-watershed")
    detector.info = replace(detector.info, bright_field_with=str(tmp_path / "gone.pt"))
    image, _ = disc_image((64, 64), n=2)
    assert segment(image, detector).n_objects == 2  # a dark image never needs it
    with pytest.raises(ModelLoadError, match="gone.pt"):
        segment(light(image), detector)


def test_the_named_nuclei_model_hands_light_images_to_nuclei_brightfield():
    nuclei = load_model("nuclei", device="cpu")
    assert nuclei.info.bright_field_with == "nuclei-brightfield"
    image, _ = load_sample("small")
    result = segment(light(image), nuclei)
    assert Path(result.metadata["model"]["path"]).name == "nuclei_yolo11n_seg_brightfield.pt"
    assert result.metadata["parameters"]["bright_field_switch"]["model"].endswith("nuclei_yolo11n_seg.pt")
    # the specialist keeps its own outlines (refinement lowers its score on light images)
    assert result.metadata["parameters"]["refine"] is None
    assert result.n_objects > 0
    from napari_cellseg.pipeline.segment import companions_of, contour_refiner

    assert "nuclei-brightfield" in companions_of(nuclei)  # loaded once, kept for the next run
    assert contour_refiner(companions_of(nuclei)["nuclei-brightfield"], "auto") is None
    assert segment(image, nuclei).metadata["model"]["path"] == nuclei.info.path


def test_the_shipped_bright_field_model_is_the_one_documented():
    from napari_cellseg.backends import MODELS_DIR

    specialist = load_model("nuclei-brightfield", device="cpu")
    card = (MODELS_DIR / "MODEL_CARD.md").read_text()  # the calibration record lives in the model card
    assert specialist.info.sha256 in card
    nuclei = load_model("nuclei", device="cpu")
    # the training scale of the model it stands in for; its own calibration, as documented
    for field in ("zoom", "train_imgsz", "mask_erosion"):
        assert getattr(specialist.info, field) == getattr(nuclei.info, field), field
    info = specialist.info
    assert (f"`conf = {info.conf:g}`, `mask_threshold = {info.mask_threshold:g}`, "
            f"`mask_erosion = {info.mask_erosion}`, `object_diameter = {info.object_diameter:g}`") in card
    assert (f"score threshold {info.conf:.2f}, mask threshold {info.mask_threshold:g}, "
            f"reference object size {info.object_diameter:g}") in " ".join(card.split())
