"""Shape handling: planes, RGB detection, channel_axis, bad shapes."""

import numpy as np
import pytest

from msrnet_napari.layout import LAYOUTS, guess_layout, layout_options, resolve_layout


@pytest.mark.parametrize(
    "shape, rgb, n_planes, plane",
    [((7, 5), False, 1, (7, 5)), ((7, 5, 3), True, 1, (7, 5, 3)), ((7, 5, 4), True, 1, (7, 5, 4)),
     ((4, 7, 5), False, 4, (7, 5)), ((2, 3, 7, 5, 3), True, 6, (7, 5, 3)), ((5, 7, 5), False, 5, (7, 5))],
)
def test_auto_layout(shape, rgb, n_planes, plane):
    layout = resolve_layout(shape, rgb=None, channel_axis=None)
    assert (layout.rgb, layout.n_planes, layout.plane_shape) == (rgb, n_planes, plane)


def test_planes_round_trip_with_channel_axis():
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    layout = resolve_layout(data.shape, rgb=None, channel_axis=1)
    planes = layout.to_planes(data)
    assert planes.shape == (6, 4, 5)
    np.testing.assert_array_equal(planes[1], data[1, 0])  # channel-major after moveaxis
    np.testing.assert_array_equal(layout.from_planes(planes), data)


def test_rgb_false_forces_gray_stack():
    layout = resolve_layout((10, 10, 3), rgb=False, channel_axis=None)
    assert not layout.rgb and layout.n_planes == 10 and layout.plane_shape == (10, 3)


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [((5,), {}, "at least 2"), ((0, 5), {}, "empty"), ((5, 5, 5), {"rgb": True}, "3 \\(RGB\\) or 4"),
     ((5, 5), {"rgb": True}, "3 \\(RGB\\) or 4"), ((3, 5, 5), {"channel_axis": 1}, "Y, X"),
     ((2, 3, 5, 5), {"channel_axis": -2}, "between the last two"), ((5, 5), {"channel_axis": -1}, "3-D"),
     ((3, 5, 5), {"channel_axis": 1.5}, "must be an integer"),
     ((3, 5, 5), {"channel_axis": 3}, "out of range"), ((3, 5, 5, 3), {"channel_axis": 0, "rgb": True}, "cannot")],
)
def test_bad_shapes(shape, kwargs, match):
    kwargs = {"rgb": None, "channel_axis": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        resolve_layout(shape, **kwargs)


# ------------------------------------------------------------------ channels last

def test_channel_axis_last_has_y_x_before_it():
    data = np.arange(4 * 6 * 7 * 2).reshape(4, 6, 7, 2)
    for axis in (-1, 3):
        layout = resolve_layout(data.shape, rgb=None, channel_axis=axis)
        assert layout.channel_axis == 3 and not layout.rgb
        assert layout.spatial_axes == (1, 2) and layout.plane_shape == (6, 7)
        assert layout.n_planes == 8
        planes = layout.to_planes(data)
        np.testing.assert_array_equal(planes[1], data[1, :, :, 0])  # channel-major
        np.testing.assert_array_equal(planes[4], data[0, :, :, 1])
        np.testing.assert_array_equal(layout.from_planes(planes), data)
    assert resolve_layout((5, 6, 3), rgb=False, channel_axis=-1).plane_shape == (5, 6)


@pytest.mark.parametrize("shape", [(395, 695, 2), (8, 9, 1), (3, 40, 50, 2)])
def test_auto_never_makes_planes_of_width_one_or_two(shape):
    layout = resolve_layout(shape, rgb=None, channel_axis=None)
    assert layout.channel_axis == len(shape) - 1 and layout.plane_shape == shape[-3:-1]
    # asked for explicitly, gray planes of width 2 are still possible
    assert resolve_layout(shape, rgb=False, channel_axis=None).plane_shape == shape[-2:]


# ------------------------------------------------------------------ the layout rule

@pytest.mark.parametrize("shape, dtype, intensity, kind", [
    ((64, 80), np.uint16, None, "planes"),
    ((64, 80), np.uint8, None, "planes"),
    ((5, 64, 80), np.uint16, None, "planes"),
    ((64, 80, 3), np.uint8, None, "rgb"),
    ((64, 80, 4), np.uint8, None, "rgb"),
    ((64, 80, 3), np.float32, None, "rgb"),
    ((2, 64, 80, 3), np.uint8, None, "rgb"),
    ((64, 80, 3), np.uint16, None, "channels-last"),  # 16-bit composite napari shows as RGB
    ((64, 80, 4), np.int32, None, "channels-last"),
    ((64, 80, 3), np.uint16, "linear", "channels-last"),
    ((64, 80, 3), np.uint16, "photo", "rgb"),  # photo model chosen: a 16-bit colour photo
    ((395, 695, 2), np.uint16, None, "channels-last"),  # never 395 planes of (695, 2)
    ((395, 695, 2), np.uint8, "photo", "channels-last"),
    ((64, 80, 1), np.float32, None, "channels-last"),
])
def test_guess_layout(shape, dtype, intensity, kind):
    got, reason = guess_layout(shape, dtype, intensity)
    assert got == kind and isinstance(reason, str) and reason
    assert got in LAYOUTS


def test_guess_layout_explains_itself():
    kind, reason = guess_layout((395, 695, 3), np.uint16)
    assert "channels" in reason and "RGB" in reason and "uint16" in reason
    _, reason = guess_layout((395, 695, 2), np.uint16)
    assert "too short to be X" in reason
    _, reason = guess_layout((3, 395, 695), np.uint16)  # a short leading axis is noted
    assert "3 plane(s)" in reason and "may be channels" in reason


@pytest.mark.parametrize("shape, dtype", [
    ((64, 80), np.uint16), ((4, 64, 80), np.uint8), ((64, 80, 3), np.uint8),
    ((64, 80, 3), np.uint16), ((64, 80, 2), np.uint16), ((2, 64, 80, 4), np.float32),
])
def test_resolve_layout_auto_agrees_with_the_rule(shape, dtype):
    """What enhance() does without rgb/channel_axis is what guess_layout says: the
    linear model enhances an RGB-flagged array channel by channel (its "channels-last"),
    so only the shape part differs in name, not in effect."""
    from msrnet_napari.intensity import IntensityDecision

    auto = resolve_layout(shape, rgb=None, channel_axis=None)
    kind, _ = guess_layout(shape, dtype)
    explicit = resolve_layout(shape, **layout_options(kind))
    linear = IntensityDecision("microscopy", "linear", auto.rgb, auto.channel_axis,
                               np.dtype(dtype)).layout_for(shape)
    if kind == "rgb":
        assert auto == explicit
    elif kind == "planes":
        assert auto == explicit and linear == auto
    else:  # channels-last: the same planes, channel-major
        assert linear.n_planes == explicit.n_planes
        assert linear.plane_shape == explicit.plane_shape == shape[-3:-1]
        data = np.arange(np.prod(shape)).reshape(shape)
        moved = np.moveaxis(data, -1, 0) if auto.rgb else data
        np.testing.assert_array_equal(linear.to_planes(moved), explicit.to_planes(data))


def test_layout_options():
    assert layout_options("rgb") == {"rgb": True, "channel_axis": None}
    assert layout_options("channels-last") == {"rgb": False, "channel_axis": -1}
    assert layout_options("planes") == {"rgb": False, "channel_axis": None}
    with pytest.raises(ValueError, match="layout must be one of"):
        layout_options("auto")


# ------------------------------------------------------------------ enhance() on channels last

def _weights(intensity):
    from msrnet_napari.config import MSRNetConfig

    from conftest import random_weights

    if intensity == "linear":
        return random_weights(MSRNetConfig(log_bases=(1e-4,), depth=2, width=4,
                                           intensity="linear"), identity=True)
    return random_weights(MSRNetConfig(depth=2, width=8))


@pytest.mark.parametrize("intensity", ["photo", "linear"])
def test_enhance_accepts_channels_last(intensity):
    from msrnet_napari import enhance, scaling_for

    weights = _weights(intensity)
    rng = np.random.default_rng(0)
    data = (100 + rng.poisson(20, (2, 40, 50, 3))).astype(np.uint16)
    out, decision = enhance(data, weights=weights, channel_axis=-1, return_decision=True)
    assert out.shape == data.shape and out.dtype == data.dtype
    assert decision.channel_axis == 3 and not decision.rgb
    # the same as the channels moved in front of Y, X
    front = enhance(np.moveaxis(data, -1, 1), weights=weights, channel_axis=1)
    np.testing.assert_array_equal(out, np.moveaxis(front, 1, -1))
    # one plane under the whole stack's decision matches the whole-stack run
    whole = scaling_for(data, weights=weights, channel_axis=-1)
    np.testing.assert_array_equal(enhance(data[1:2], weights=weights, scaling=whole)[0], out[1])
    da = pytest.importorskip("dask.array")
    lazy = enhance(da.from_array(data, chunks=(1, 20, 25, 1)), weights=weights, channel_axis=-1)
    # the same decision; the engine's float32 results for a block and for the whole plane
    # differ by up to one ulp (7.6e-6 at ~120 counts, also with MSRNET_WINOGRAD=0 and no flat
    # correction), so a value at a rounding boundary may round the other way (1 count, 1
    # pixel in 12,000 measured)
    diff = np.abs(np.asarray(lazy).astype(np.int64) - out.astype(np.int64))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= out.size // 1000


def test_enhance_two_channels_last_is_not_run_as_planes_of_width_two():
    from msrnet_napari import enhance

    weights = _weights("linear")
    rng = np.random.default_rng(1)
    data = np.stack([100 + rng.poisson(5, (40, 50)), 500 + rng.poisson(50, (40, 50))],
                    axis=-1).astype(np.uint16)
    out, decision = enhance(data, weights=weights, return_decision=True)
    assert decision.channel_axis == 2  # the documented rule, recorded in the decision
    darks = [ch.dark for ch in decision.linear.channels]  # one dark level per channel
    assert len(darks) == 2 and abs(darks[0] - 105) < 10 and abs(darks[1] - 550) < 25
    np.testing.assert_array_equal(out, enhance(data, weights=weights, channel_axis=-1))
