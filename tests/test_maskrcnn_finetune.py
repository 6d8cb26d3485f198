"""Fine-tuning a Mask R-CNN on generated discs: the loss drops and the checkpoint loads as a backend."""
import pytest

from napari_cellseg import load_model
from napari_cellseg.maskrcnn.train import NO_BACKBONE_NOTE, maskrcnn_finetune_iter
from napari_cellseg.pipeline.segment import run

from synthetic import disc_image


@pytest.mark.slow
def test_finetune_from_scratch_lowers_the_loss_and_writes_a_loadable_model(tmp_path):
    samples = [(f"s{i}", *disc_image((96, 96), n=4, radius=(8, 12), seed=i)) for i in range(2)]
    messages = []
    result = run(maskrcnn_finetune_iter(samples, tmp_path / "mrcnn.pth", epochs=4, batch=2, lr=0.002,
                                        min_size=96, max_size=128),
                 lambda p: messages.append(p.message))
    assert messages[0] == NO_BACKBONE_NOTE
    losses = [h["train/loss"] for h in result.history]
    assert len(losses) == 4 and min(losses[1:]) < losses[0]
    model = load_model(result.path, device="cpu")
    assert model.info.backend == "maskrcnn" and model.config.min_size_test == 96
    assert NO_BACKBONE_NOTE in model.info.extra["notes"]


@pytest.mark.slow
def test_a_detectron2_checkpoint_fine_tuned_here_keeps_the_stretch_it_was_trained_on(tmp_path):
    """Fine-tuning feeds percentile-stretched frames (normalize.model_rgb), so the written model asks for
    them, unlike the detectron2 checkpoint it started from (which wants the frame as given)."""
    from detectron2_style import SMALL_CONFIG, detectron2_state, save_pth

    base = save_pth(detectron2_state(1, cell_bias=8.0), tmp_path / "d2" / "model_final.pth", SMALL_CONFIG % 1)
    assert load_model(base, device="cpu").info.wants_raw_uint8
    samples = [("s0", *disc_image((96, 96), n=4, radius=(8, 12), seed=0))]
    result = run(maskrcnn_finetune_iter(samples, tmp_path / "tuned.pth", base=base, epochs=1, batch=1))
    tuned = load_model(result.path, device="cpu")
    assert tuned.exact is not None and tuned.config.input_range == "percentiles"
    assert not tuned.info.wants_raw_uint8 and tuned.info.wants_whole_frame
    assert tuned.info.notes == []  # its notes tell how it was trained: not warnings for every run
