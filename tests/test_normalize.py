"""Intensity normalisation rules (pure numpy, no engine)."""

import numpy as np
import pytest

from msrnet_napari.normalize import choose_scaling, detect_bit_depth, from_unit, to_unit


@pytest.mark.parametrize(
    "maximum, bits", [(0, 8), (255, 8), (256, 10), (1023, 10), (4000, 12), (4095, 12),
                      (4096, 14), (16383, 14), (40000, 16), (65535, 16), (70000, 24)],
)
def test_detect_bit_depth(maximum, bits):
    assert detect_bit_depth(maximum) == bits


def test_uint8_uses_full_scale_regardless_of_content():
    s = choose_scaling(np.uint8, maximum=10)
    assert (s.low, s.high) == (0.0, 255.0)


def test_12bit_in_uint16_detected():
    s = choose_scaling(np.uint16, maximum=4000, minimum=0)
    assert s.high == 4095.0 and "12-bit" in s.description


def test_bit_depth_override_and_bounds():
    assert choose_scaling(np.uint16, maximum=100, bit_depth=16).high == 65535.0
    with pytest.raises(ValueError, match="bit_depth"):
        choose_scaling(np.uint8, bit_depth=12)
    with pytest.raises(ValueError, match="bit_depth"):
        choose_scaling(np.float32, maximum=1.0, minimum=0.0, bit_depth=8)


def test_float_must_be_in_unit_range_unless_range_given():
    assert choose_scaling(np.float32, maximum=1.0, minimum=0.0).high == 1.0
    with pytest.raises(ValueError, match="intensity_range"):
        choose_scaling(np.float32, maximum=3.5, minimum=0.0)
    s = choose_scaling(np.float32, maximum=3.5, minimum=-1.0, intensity_range=(-1.0, 3.5))
    np.testing.assert_allclose(to_unit(np.array([-1.0, 1.25, 3.5]), s), [0.0, 0.5, 1.0])


def test_negative_integers_rejected_and_bad_dtypes():
    with pytest.raises(ValueError, match="negative"):
        choose_scaling(np.int16, minimum=-5, maximum=100)
    for dt in (bool, object, np.complex64, "U3"):
        with pytest.raises(ValueError, match="unsupported dtype"):
            choose_scaling(np.dtype(dt), maximum=1, minimum=0)
    with pytest.raises(ValueError, match="high > low"):
        choose_scaling(np.float32, intensity_range=(1.0, 1.0))


def test_round_trip_is_exact_for_integers():
    s = choose_scaling(np.uint16, maximum=4095, minimum=0)
    data = np.arange(4096, dtype=np.uint16)
    unit = to_unit(data, s)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_array_equal(from_unit(unit, s, np.uint16), data)


def test_from_unit_clips_out_of_range_network_output():
    s = choose_scaling(np.uint8)
    out = from_unit(np.array([-0.3, 0.5, 1.7], dtype=np.float32), s, np.uint8)
    np.testing.assert_array_equal(out, [0, 128, 255])
