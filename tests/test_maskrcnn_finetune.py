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
