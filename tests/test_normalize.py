import numpy as np
import pytest

from napari_cellseg.core.normalize import ImageInputError, normalize_to_uint8, to_stack_of_frames


def test_16bit_dim_signal_is_stretched_not_crushed():
    rng = np.random.default_rng(0)
    image = rng.integers(100, 1200, size=(64, 64)).astype(np.uint16)  # 12-bit-like, dim
    naive = image.astype(np.uint8)  # what a plain cast does: wraps/crushes
    out = normalize_to_uint8(image)
    assert out.dtype == np.uint8
    assert out.max() >= 250 and out.min() <= 5
    # order of intensities is preserved (monotone mapping)
    flat_in, flat_out = image.ravel(), out.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order].astype(int)) >= 0)
    assert not np.array_equal(out, naive)


def test_float_image_with_nan_and_inf():
    image = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    image[0, 0], image[0, 1], image[0, 2] = np.nan, np.inf, -np.inf
    out = normalize_to_uint8(image)
    assert out[0, 0] == 0 and out[0, 2] == 0 and out[0, 1] == 255
    assert out[9, 9] == 255


def test_constant_image_maps_to_zero_and_all_nan_is_an_error():
    assert normalize_to_uint8(np.full((8, 8), 7.0)).max() == 0
    with pytest.raises(ImageInputError, match="no finite values"):
        normalize_to_uint8(np.full((8, 8), np.nan))


def test_grey_rgb_rgba_and_stacks():
    frames, layout = to_stack_of_frames(np.zeros((5, 32, 40), np.uint16))
    assert frames.shape == (5, 32, 40, 1) and layout.stack_shape == (5,)
    frames, layout = to_stack_of_frames(np.zeros((32, 40, 4), np.uint8))
    assert frames.shape == (32, 40, 3) and layout.stack_shape == () and layout.channels == 3
    frames, layout = to_stack_of_frames(np.zeros((32, 40, 3), np.uint8), rgb=False)
    assert layout.stack_shape == (32,) and layout.height == 40


def test_multichannel_needs_an_explicit_channel():
    image = np.zeros((2, 32, 32), np.uint16)
    image[1] = 5
    with pytest.raises(ImageInputError, match="choose one with channel"):
        to_stack_of_frames(image, channel_axis=0)
    frames, layout = to_stack_of_frames(image, channel_axis=0, channel=1)
    assert frames.shape == (32, 32, 1) and frames.max() == 5
    with pytest.raises(ImageInputError, match="does not exist"):
        to_stack_of_frames(image, channel_axis=0, channel=2)


@pytest.mark.parametrize(
    "shape, message",
    [((0, 0), "too small"), ((1, 1), "too small"), ((2, 2, 2, 2, 8, 8), "at most two stack axes"), ((5,), "2-D")],
)
def test_bad_shapes_are_rejected_clearly(shape, message):
    with pytest.raises(ImageInputError, match=message):
        to_stack_of_frames(np.zeros(shape, np.uint8), rgb=False)


@pytest.mark.parametrize("dtype, high", [(np.uint8, 1), (np.uint8, 255), (np.uint16, 4095), (np.uint16, 65535)])
def test_integer_percentiles_match_numpy(dtype, high):
    """8- and 16-bit channels take their percentiles from a histogram: the numbers np.percentile gives."""
    from napari_cellseg.core.normalize import percentile_range

    rng = np.random.default_rng(high)
    for shape in [(1, 1), (7, 3), (97, 131)]:
        channel = rng.integers(0, high + 1, size=shape).astype(dtype)
        for percentiles in [(1.0, 99.8), (0.0, 100.0), (13.7, 61.2)]:
            expected = np.percentile(channel.astype(np.float64), percentiles)
            if expected[1] <= expected[0]:
                expected = (channel.min(), channel.max())
            assert percentile_range(channel, percentiles) == pytest.approx(tuple(map(float, expected)), abs=1e-9)
