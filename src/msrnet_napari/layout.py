"""Array layout: any supported image shape <-> a stack of H x W (x C) planes.

* gray: the last two axes are Y, X; every leading axis (Z, T, ...) is a plane.
* RGB/RGBA (``rgb=True``, or auto: ndim >= 3 and a last axis of 3 or 4):
  the last three axes are Y, X, C; alpha is passed through unchanged.
* ``channel_axis=k``: a non-RGB multichannel image (e.g. fluorescence); each
  channel is enhanced on its own as a gray image. The channel axis is either
  an axis before Y, X (``(C, Y, X)``, ``(T, C, Y, X)``) or the last axis, with
  Y, X the two axes before it (``(Y, X, C)``, ``channel_axis=-1``).

Which of these an array is when nobody says (``rgb=None, channel_axis=None``)
is decided by ONE rule, :func:`guess_layout` (shape, dtype and the intensity
model): the widget's Layout "auto" shows its answer and reason, and
:func:`resolve_layout`'s auto path applies the same rule (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["LAYOUTS", "Layout", "guess_layout", "layout_options", "resolve_layout"]

#: the three layouts an image can be enhanced as (the widget's Layout choices)
LAYOUTS = ("rgb", "channels-last", "planes")
#: a last axis this short is never X: it holds channels (or RGB(A) colour)
MAX_CHANNELS_LAST = 4


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
        nd = len(self.shape)
        if self.rgb or self.channel_axis == nd - 1:  # (..., Y, X, C)
            return (nd - 3, nd - 2)
        return (nd - 2, nd - 1)

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


def _colour_dtype(dtype: Any) -> bool:
    """uint8 and float data with 3 or 4 values per pixel are colour (RGB(A)) images."""
    dtype = np.dtype(dtype)
    return dtype == np.uint8 or dtype.kind == "f"


def guess_layout(shape: tuple[int, ...], dtype: Any,
                 intensity: Optional[str] = None) -> tuple[str, str]:
    """THE layout rule: ``("rgb" | "channels-last" | "planes", reason)`` for data of
    ``shape`` and ``dtype`` that nobody described.

    1. Fewer than 3 axes: ``"planes"`` (one gray (Y, X) plane).
    2. A last axis of 1 or 2 (3 or more axes): ``"channels-last"`` - it is too short
       to be X and is never colour: e.g. a (Y, X, 2) two-channel image.
    3. A last axis of 3 or 4: ``"rgb"`` (RGB / RGBA colour) for uint8 and float data;
       for wider integers (uint16, int32, ...) ``"channels-last"``: 16-bit data with
       3 values per pixel is, in practice, a composite of fluorescence channels
       (napari shows it as RGB), each of which gets its own dark level and scale.
       Exception: ``intensity="photo"`` (the photo model chosen explicitly) reads
       them as colour, a 16-bit colour photo: ``"rgb"``.
    4. Otherwise ``"planes"``: the last two axes are Y, X and every leading axis
       (Z, T, ...) holds planes, enhanced under one decision for the whole stack.
       A short leading axis may be channels; the rule cannot tell them from a short
       time-lapse: open channels as separate layers (napari's ``channel_axis``) so
       each gets its own scaling, or pass ``channel_axis``.

    ``intensity`` is the intensity model of the weights that will run ("photo" or
    "linear"); None = the default model for this data (``models.default_model_for``,
    which follows the same dtype split: colour -> photo, everything else -> linear).
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd < 3:
        return "planes", "2-D data: one gray (Y, X) plane"
    last = shape[-1]
    dims = f"{nd}-D, last axis {last}"
    if last <= 2:
        return ("channels-last",
                f"{dims}: too short to be X, so it holds {last} channel(s) (Y, X before it)")
    if last <= MAX_CHANNELS_LAST:
        what = "RGB" if last == 3 else "RGBA"
        name = np.dtype(dtype).name
        if _colour_dtype(dtype):
            return "rgb", f"{dims}, {name}: {what} colour"
        if intensity == "photo":
            return "rgb", f"{dims}, {name}, photo model: {what} colour (a wide-integer photo)"
        return ("channels-last",
                f"{dims}, {name}: {last} channels (a fluorescence composite napari shows as "
                f"RGB), each with its own dark level and scale; choose RGB for a colour photo")
    lead = shape[:-2]
    planes = int(np.prod(lead, dtype=np.int64))
    reason = f"{dims}: Y, X last; {planes} plane(s) along the leading axes"
    if any(n <= MAX_CHANNELS_LAST for n in lead):
        reason += (" (a short leading axis may be channels: open them as separate layers "
                   "to scale each on its own)")
    return "planes", reason


def layout_options(kind: str) -> dict[str, Any]:
    """enhance() / scaling_for() arguments for a layout: ``rgb`` and ``channel_axis``."""
    if kind not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {str(kind)[:40]!r}")
    return {"rgb": kind == "rgb", "channel_axis": -1 if kind == "channels-last" else None}


def resolve_layout(shape: tuple[int, ...], *, rgb: bool | None, channel_axis: int | None) -> Layout:
    """Check ``shape`` and decide how it is split into planes (ValueError if impossible).

    Auto (``rgb=None, channel_axis=None``) follows :func:`guess_layout`, which this
    shape-only function can apply up to the dtype: a last axis of 1 or 2 is channels
    (``channel_axis=-1``), a last axis of 3 or 4 is flagged RGB - the photo intensity
    model reads it as colour, the linear (microscopy) model enhances each of its
    channels on its own, which is the rule's "channels-last" for wide integers.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd < 2:
        raise ValueError(f"need an image with at least 2 dimensions (Y, X), got shape {shape}")
    if 0 in shape:
        raise ValueError(f"empty image: shape {shape}")
    if channel_axis is None and rgb is None and nd >= 3 and shape[-1] <= 2:
        channel_axis = nd - 1  # guess_layout rule 2: never planes of width 1 or 2
    if channel_axis is not None:
        if rgb:
            raise ValueError("rgb=True and channel_axis cannot be combined: RGB data has no channel_axis")
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise ValueError(f"channel_axis must be an integer axis (or None), got "
                             f"{type(channel_axis).__name__}")
        if not -nd <= channel_axis < nd:
            raise ValueError(f"channel_axis {channel_axis} out of range for {nd}-D data")
        channel_axis = int(channel_axis) % nd
        if nd < 3:
            raise ValueError("channel_axis needs at least 3-D data (channels, Y, X)")
        if channel_axis == nd - 2:
            raise ValueError(
                f"channel_axis {channel_axis} lies between the last two axes: the channel axis "
                "must come before Y, X (C, Y, X) or be the last axis (Y, X, C)"
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
