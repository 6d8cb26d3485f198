"""The CPU inference copy of the classifier is exact and follows changes to the weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_cellseg.classifier.fast import DenseConv, inference_model  # noqa: E402
from napari_cellseg.classifier.model import Classifier, build_resnet50  # noqa: E402


def _resnet_with_batch_norm_statistics(n_classes=5, in_channels=1, seed=0):
    torch.manual_seed(seed)
    model = build_resnet50(n_classes, in_channels).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics, so folding is exercised
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize(("in_channels", "side"), [(1, 40), (2, 64), (1, 24)])
def test_inference_model_matches_the_original(in_channels, side):
    model = _resnet_with_batch_norm_statistics(in_channels=in_channels)
    fast = inference_model(model, in_channels, (side, side))
    assert any(isinstance(m, DenseConv) for m in fast.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.rand(6, in_channels, side, side)
    with torch.no_grad():
        expected, got = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_dense_convolution_equals_the_convolution_it_replaces():
    torch.manual_seed(1)
    for stride, side in [(1, 2), (2, 3), (1, 1)]:
        conv = torch.nn.Conv2d(7, 5, 3, stride=stride, padding=1, bias=True)
        dense = DenseConv(conv, (side, side))
        x = torch.rand(4, 7, side, side)
        torch.testing.assert_close(dense(x), conv(x), rtol=1e-5, atol=1e-5)


def test_predict_follows_weight_changes_and_crop_sizes():
    model = _resnet_with_batch_norm_statistics(n_classes=3)
    with torch.no_grad():
        model.fc.weight.mul_(1e-4)  # moderate logits, so a bias change shows in the probabilities
    clf = Classifier(model, ["a", "b", "c"], 1, 40)
    crops = np.random.default_rng(0).random((4, 40, 40)).astype(np.float32)
    before = clf.predict(crops)
    with torch.no_grad():
        model.fc.bias += torch.tensor([1.0, 0.0, 0.0])  # an optimiser step, in place
    after = clf.predict(crops)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(torch.from_numpy(crops[:, None])), 1).numpy()
    np.testing.assert_allclose(after, expected, atol=1e-4)
    assert (after[:, 0] > before[:, 0]).all()
    assert clf.predict(np.random.default_rng(1).random((2, 1, 64, 64)).astype(np.float32)).shape == (2, 3)
    assert clf.predict(np.zeros((0, 1, 40, 40), np.float32)).shape == (0, 3)
