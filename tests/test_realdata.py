"""Real-data checks on ../shared/data (skipped when the folder is absent)."""
import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg import load_model, segment
from napari_cellseg.backends import MODELS_DIR, NAMED_MODELS
from napari_cellseg.core.io import read_image, sha256_of
from napari_cellseg.core.metrics import dice, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

SHIPPED = MODELS_DIR / NAMED_MODELS["nuclei"]


def test_shipped_nuclei_model_loads_with_its_card():
    model = load_model("nuclei", device="cpu")
    assert model.info.task == "segment" and model.info.class_names == {0: "nucleus"}
    assert model.info.zoom == 1.5 and model.info.train_imgsz == 384  # tiles of 256 image pixels
    card = (MODELS_DIR / "MODEL_CARD.md").read_text()
    assert sha256_of(SHIPPED) in card
    # the calibration the card reports is the one the checkpoint carries
    assert (f"`conf = {model.info.conf}` and `mask_erosion = {model.info.mask_erosion}` and "
            f"`mask_threshold = {model.info.mask_threshold}`") in card
    assert f"`object_diameter = {model.info.object_diameter:g}`" in card


def _validation_fluorescence(data: Path, n: int):
    from train_nuclei_model import is_validation

    rows = csv.DictReader(open(data / "metadata.csv"))
    ids = sorted(r["id"] for r in rows if r["modality_guess"] == "fluorescence" and is_validation(r["id"]))
    return ids[:n]


@pytest.mark.slow
@pytest.mark.realdata
def test_nuclei_model_keeps_its_validation_quality(shared_data):
    """A regression floor a little under what the shipped model scores on these 12 images
    (F1 0.874, DSB score 0.543, count error 0.109 at the model's calibrated settings, object size
    measured, outlines refined by its contour U-Net; with its own outlines F1 0.868, DSB 0.513; those at
    the training scale for every image F1 0.854; with test-time augmentation F1 0.889 and DSB 0.563;
    the card's figures are over all 61 fluorescence images)."""
    data = shared_data / "dsb2018"
    model = load_model("nuclei", device="cpu")
    runs = {"default": {}, "tta": {"tta": True}, "own": {"refine": None}, "own_fixed": {"refine": None, "diameter": None}}
    scores = {name: [] for name in runs}
    for image_id in _validation_fluorescence(data, 12):
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        for name, options in runs.items():
            row = evaluate(segment(image, model, **options).labels, truth, with_coco=False)
            scores[name].append((row["f1_50"], row["dsb_score"], abs(row["relative_count_error"])))
    (f1, dsb, count_error), tta, own, own_fixed = (np.mean(scores[name], axis=0) for name in runs)
    assert f1 >= 0.84
    assert dsb >= 0.51
    assert count_error <= 0.15
    assert dsb >= own[1] + 0.02 and f1 >= own[0] - 0.005  # refined outlines: better masks, the same objects
    assert own[0] >= own_fixed[0] + 0.005  # the measured object size pays its second pass
    assert tta[0] >= f1 and tta[1] >= dsb + 0.01


@pytest.mark.slow
@pytest.mark.realdata
def test_usiigaci_16bit_phase_contrast_runs_tiled_at_full_resolution(shared_data):
    path = next((shared_data / "usiigaci" / "images").glob("*.tif"))
    image = read_image(path)
    assert image.dtype == np.uint16 and image.shape == (1022, 1024)
    model = load_model("nuclei", device="cpu")
    result = segment(image, model, diameter=None)
    assert result.labels.shape == image.shape
    assert result.metadata["parameters"]["tile"] == 256  # full resolution, never shrunk to imgsz
    # "auto" picks its zoom from what the first pass found, within its range: never below native resolution
    parameters = segment(image, model).metadata["parameters"]
    assert parameters["measured_diameter"] > 0 and 1.0 <= parameters["zoom"] <= 3.0
    assert 128 <= parameters["tile"] <= 384


def test_shipped_student_is_distilled_from_the_shipped_teacher_and_matches_its_card():
    student = load_model("nuclei-student", device="cpu")
    teacher = load_model("nuclei", device="cpu")
    card = (MODELS_DIR / "STUDENT_CARD.md").read_text()
    assert student.info.sha256 in card
    assert student.info.extra["teacher"] == "nuclei"
    from napari_cellseg.unet_student.model import CHECKPOINT_KEY, load_checkpoint

    meta = load_checkpoint(MODELS_DIR / NAMED_MODELS["nuclei-student"])[CHECKPOINT_KEY]
    assert meta["info"]["teacher_sha256"] == teacher.info.sha256  # the teacher that ships now
    assert meta["info"]["teacher_settings"] == {"refine": "auto"}  # the teacher as it runs by default
    assert f"foreground threshold {student.postprocess.fg_threshold}" in card


@pytest.mark.slow
@pytest.mark.realdata
def test_student_keeps_its_agreement_with_its_teacher(shared_data):
    """A regression floor a little under what the shipped student scores on these 12 images
    (foreground Dice against its teacher as the teacher runs by default, outlines redrawn by its
    contour U-Net: 0.974; F1 at IoU 0.5 99 % of the teacher's, where issue 5 asks for 90 %). The
    card's figures are over all 76 validation images."""
    data = shared_data / "dsb2018"
    student, teacher = load_model("nuclei-student", device="cpu"), load_model("nuclei", device="cpu")
    agreement, f1_student, f1_teacher = [], [], []
    for image_id in _validation_fluorescence(data, 12):
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        learned, taught = segment(image, student).labels, segment(image, teacher).labels
        agreement.append(dice(learned, taught))
        f1_student.append(evaluate(learned, truth, with_coco=False)["f1_50"])
        f1_teacher.append(evaluate(taught, truth, with_coco=False)["f1_50"])
    assert np.mean(agreement) >= 0.95
    assert np.mean(f1_student) >= 0.90 * np.mean(f1_teacher)


@pytest.mark.slow
@pytest.mark.realdata
def test_every_dsb2018_image_goes_to_the_model_its_modality_calls_for(shared_data):
    """The light-background test sends all 428 fluorescence images to `nuclei` and all 103 histology and
    grey bright-field images to `nuclei-brightfield` (the metadata's modality guess is the reference)."""
    from napari_cellseg.core.normalize import bright_background, to_stack_of_frames

    data = shared_data / "dsb2018"
    wrong = []
    for row in csv.DictReader(open(data / "metadata.csv")):
        frames, _ = to_stack_of_frames(read_image(data / "images" / f"{row['id']}.png"))
        if bright_background(frames) != (row["modality_guess"] != "fluorescence"):
            wrong.append((row["id"], row["modality_guess"]))
    assert wrong == []


@pytest.mark.slow
@pytest.mark.realdata
def test_the_bright_field_model_keeps_its_validation_quality(shared_data):
    """A regression floor a little under what `nuclei` scores on the 15 validation images with a light
    background (12 histology, 3 grey bright-field) when it hands them to `nuclei-brightfield` (DSB 0.404),
    and well above what it scores segmenting them itself (0.296; the card's figures)."""
    from train_nuclei_model import is_validation

    data = shared_data / "dsb2018"
    ids = sorted(r["id"] for r in csv.DictReader(open(data / "metadata.csv"))
                 if r["modality_guess"] != "fluorescence" and is_validation(r["id"]))
    assert len(ids) == 15
    model = load_model("nuclei", device="cpu")
    scores = {"switched": [], "itself": []}
    for image_id in ids:
        image = read_image(data / "images" / f"{image_id}.png")
        truth = read_image(data / "labels" / f"{image_id}.png")
        for name, switch in (("switched", "auto"), ("itself", None)):
            result = segment(image, model, bright_field=switch)
            assert (result.metadata["parameters"]["bright_field_switch"] is not None) == (name == "switched")
            scores[name].append(evaluate(result.labels, truth, with_coco=False)["dsb_score"])
    switched, itself = np.mean(scores["switched"]), np.mean(scores["itself"])
    assert switched >= 0.38 and switched >= itself + 0.08
