"""Array layout: any supported image shape <-> a stack of H x W (x C) planes.

* gray: the last two axes are Y, X; every leading axis (Z, T, ...) is a plane.
* RGB/RGBA (``rgb=True``, or auto: ndim >= 3 and a last axis of 3 or 4):
  the last three axes are Y, X, C; alpha is passed through unchanged.
* ``channel_axis=k``: a non-RGB multichannel image (e.g. fluorescence); each
  channel is enhanced on its own as a gray image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    rgb: bool
    channel_axis: int | None  # normalised to a non-negative axis, or None

    @property
    def working_shape(self) -> tuple[int, ...]:
        """Shape after moving ``channel_axis`` to the front."""
        if self.channel_axis is None:
            return self.shape
        rest = [s for i, s in enumerate(self.shape) if i != self.channel_axis]
        return (self.shape[self.channel_axis], *rest)

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return self.working_shape[-3:] if self.rgb else self.working_shape[-2:]

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """Axes of Y and X in the ORIGINAL array."""
        nd = len(self.shape)  # channel_axis is never one of these (see resolve_layout)
        return (nd - 3, nd - 2) if self.rgb else (nd - 2, nd - 1)

    @property
    def n_planes(self) -> int:
        lead = self.working_shape[: -len(self.plane_shape)]
        return int(np.prod(lead, dtype=np.int64)) if lead else 1

    def to_planes(self, data: np.ndarray) -> np.ndarray:
        """View/copy of ``data`` as (n_planes, *plane_shape)."""
        if self.channel_axis is not None:
            data = np.moveaxis(data, self.channel_axis, 0)
        return data.reshape((self.n_planes, *self.plane_shape))

    def from_planes(self, planes: np.ndarray) -> np.ndarray:
        data = planes.reshape(self.working_shape)
        if self.channel_axis is not None:
            data = np.moveaxis(data, 0, self.channel_axis)
        return data


def resolve_layout(shape: tuple[int, ...], *, rgb: bool | None, channel_axis: int | None) -> Layout:
    """Check ``shape`` and decide how it is split into planes (ValueError if impossible)."""
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd < 2:
        raise ValueError(f"need an image with at least 2 dimensions (Y, X), got shape {shape}")
    if 0 in shape:
        raise ValueError(f"empty image: shape {shape}")
    if channel_axis is not None:
        if rgb:
            raise ValueError("rgb=True and channel_axis cannot be combined: RGB data has no channel_axis")
        if not -nd <= channel_axis < nd:
            raise ValueError(f"channel_axis {channel_axis} out of range for {nd}-D data")
        channel_axis %= nd
        if nd < 3:
            raise ValueError("channel_axis needs at least 3-D data (channels, Y, X)")
        if channel_axis >= nd - 2:
            raise ValueError(
                f"channel_axis {channel_axis} is one of the last two axes, which must be Y, X"
            )
        return Layout(shape, False, channel_axis)
    if rgb is None:
        rgb = nd >= 3 and shape[-1] in (3, 4)
    if rgb:
        if nd < 3 or shape[-1] not in (3, 4):
            raise ValueError(
                f"RGB data needs a last axis of 3 (RGB) or 4 (RGBA) channels, got shape {shape}; "
                "for other channel counts pass channel_axis"
            )
    return Layout(shape, bool(rgb), None)
