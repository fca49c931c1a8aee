"""Shape handling: planes, RGB detection, channel_axis, bad shapes."""

import numpy as np
import pytest

from msrnet_napari.layout import resolve_layout


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
     ((5, 5), {"rgb": True}, "3 \\(RGB\\) or 4"), ((3, 5, 5), {"channel_axis": 2}, "Y, X"),
     ((3, 5, 5), {"channel_axis": 3}, "out of range"), ((3, 5, 5, 3), {"channel_axis": 0, "rgb": True}, "cannot")],
)
def test_bad_shapes(shape, kwargs, match):
    kwargs = {"rgb": None, "channel_axis": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        resolve_layout(shape, **kwargs)
