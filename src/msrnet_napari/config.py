"""MSR-net architecture description, shared by every part of the package.

Nothing here imports torch or the compiled engine: the checkpoint loader, the
PyTorch reference model, the C++ engine wrapper and the trainer all agree on
parameter names and shapes through :func:`parameter_shapes`.

The network (Shen et al., arXiv 1711.02488)::

    f1: M_j = log(1 + v_j X) / log(1 + v_j), j = 1..n        (3n channels)
        X1 = conv3x3(ReLU(conv1x1(concat(M))))               (3 channels)
    f2: H_0 = X1, H_m = ReLU(conv3x3(H_{m-1})), m = 1..K     (width channels)
        X2 = X1 - conv1x1(concat(H_1..H_K))                  (3 channels)
    f3: Y = conv1x1(X2)                                      (3 channels)

State-dict names (PyTorch convention, weight shape ``(out, in, kh, kw)``)::

    f1.fuse.weight/bias     (f1_width, 3n, 1, 1)
    f1.conv.weight/bias     (3, f1_width, 3, 3)
    f2.convs.{m}.weight/bias  m = 0..K-1, (width, 3 or width, 3, 3)
    f2.fuse.weight/bias     (3, K*width, 1, 1)
    f3.weight/bias          (3, 3, 1, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

CHANNELS = 3  # the model works on RGB; gray data is replicated (see enhance)
MAX_EXPOSURE_GAIN = 64.0  # display space: x * g
MAX_LINEAR_EXPOSURE_GAIN = 4096.0  # linear light: about 32x in display values
EXPOSURE_SPACES = ("display", "linear")
#: the statistic of the photo model's exposure gain (msrnet_napari.exposure):
#: "mean" - plain mean of the whole image (checkpoints before v2);
#: "robust" - winsorised mean, the brightest exposure_trim fraction clipped
EXPOSURE_STATISTICS = ("mean", "robust")
#: the bound on the gain: "fixed" - max_exposure_gain (checkpoints before v2);
#: "quantisation" - also no more than makes one quantisation step above black
#: reach black_step (see msrnet_napari.exposure.max_exposure_gain)
MAX_GAIN_RULES = ("fixed", "quantisation")
#: photo-exposure keys added in v2, written into a checkpoint's config only when they
#: differ from these defaults (so a default config's dict is the one of before)
PHOTO_EXPOSURE_DEFAULTS = {"exposure_statistic": "mean", "exposure_trim": 0.02,
                           "max_gain_rule": "fixed", "black_step": 0.25, "noise_floor": 0.0}
#: keys added later still, written only when they differ from these defaults (so older
#: checkpoints' configs read and write as before)
LATER_DEFAULTS = {"noise_input": False}
#: what "noise_input" means: input channels 1 and 2 carry the noise level (constant
#: planes, network units; msrnet_napari.linear_intensity.noise_condition) instead of
#: copies of the gray plane; linear models only
#: intensity models a checkpoint can expect (see msrnet_napari.intensity):
#: "photo" - sRGB-encoded photos, bit-depth scaling (+ exposure normalisation);
#: "linear" - linear sensor data (microscopy, astronomy): dark level and robust
#: scale per channel, no tone curve (msrnet_napari.linear_intensity).
INTENSITY_MODELS = ("photo", "linear")
ARCHITECTURE_KEYS = ("log_bases", "depth", "width", "f1_width")
#: Sane architecture limits, the one definition (checked in MSRNetConfig; the
#: checkpoint loader's size limits and the compiled engine derive from them).
#: The largest net they allow has about 37.8M parameters and needs a few
#: hundred MB per 256x256 tile; the default net (depth 10, width 32) has 85k.
MAX_DEPTH = 64
MAX_WIDTH = 256
MAX_F1_WIDTH = 64
MAX_LOG_BASES = 16


@dataclass(frozen=True)
class MSRNetConfig:
    """Hyper-parameters of one MSR-net; stored inside every checkpoint."""

    log_bases: tuple[float, ...] = (1.0, 10.0, 100.0, 300.0)  # v_j, n = len
    depth: int = 10  # K, number of 3x3 convolutions in f2
    width: int = 32  # filters per f2 convolution
    f1_width: int = 3  # channels after f1's 1x1 fusion
    # Exposure normalisation before f1 (0 = off): the whole input is re-exposed
    # by exposure_gain(mean of the whole input) in exposure_space ("display":
    # x * g on the sRGB values; "linear": in linear light, the mean being the
    # linear-light mean). See msrnet_napari.exposure. Not part of the paper.
    exposure_target: float = 0.0
    exposure_space: str = "display"
    intensity: str = "photo"  # one of INTENSITY_MODELS
    # Photo exposure rule (v2; defaults = the rule of earlier checkpoints), see
    # msrnet_napari.exposure: the statistic ("mean" or "robust", with the brightest
    # exposure_trim fraction of the pixels clipped), the max-gain rule ("fixed" or
    # "quantisation": one quantisation step above black may reach the display value
    # black_step, the step being at least noise_floor, in exposure_space units).
    exposure_statistic: str = "mean"
    exposure_trim: float = 0.02
    max_gain_rule: str = "fixed"
    black_step: float = 0.25
    noise_floor: float = 0.0
    # Linear models only: input channels 1 and 2 carry the image's noise level in network
    # units (background noise, shot noise at the reference level: two constant planes,
    # msrnet_napari.linear_intensity.noise_condition) instead of copies of channel 0, so
    # the network need not guess from 11 pixels how noisy the image is.
    noise_input: bool = False

    def __post_init__(self) -> None:
        bases = tuple(float(v) for v in self.log_bases)
        object.__setattr__(self, "log_bases", bases)
        if not bases or len(bases) > MAX_LOG_BASES:
            raise ValueError(f"log_bases must name 1..{MAX_LOG_BASES} scales v_j, got "
                             f"{len(bases)}")
        if any(not (v > 0) for v in bases):
            raise ValueError(f"log_bases must all be > 0, got {bases}")
        if not (0.0 <= float(self.exposure_target) <= 1.0):
            raise ValueError(f"exposure_target must lie in [0, 1], got "
                             f"{brief_repr(self.exposure_target)}")
        object.__setattr__(self, "exposure_target", float(self.exposure_target))
        check_exposure_space(self.exposure_space)
        if self.exposure_statistic not in EXPOSURE_STATISTICS:
            raise ValueError(f"exposure_statistic must be one of {EXPOSURE_STATISTICS}, got "
                             f"{brief_repr(self.exposure_statistic)}")
        if self.max_gain_rule not in MAX_GAIN_RULES:
            raise ValueError(f"max_gain_rule must be one of {MAX_GAIN_RULES}, got "
                             f"{brief_repr(self.max_gain_rule)}")
        for name, lo, hi, lo_open in (("exposure_trim", 0.0, 0.5, False),
                                      ("black_step", 0.0, 1.0, True),
                                      ("noise_floor", 0.0, 1.0, False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    (lo < value if lo_open else lo <= value) and value <= hi):
                raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}], "
                                 f"got {brief_repr(value)}")
            object.__setattr__(self, name, float(value))
        if self.intensity not in INTENSITY_MODELS:
            raise ValueError(f"intensity must be one of {INTENSITY_MODELS}, got "
                             f"{brief_repr(self.intensity)}")
        if not isinstance(self.noise_input, bool):
            raise ValueError(f"noise_input must be true or false, got {brief_repr(self.noise_input)}")
        if self.noise_input and self.intensity != "linear":
            raise ValueError("noise_input needs the linear intensity model")
        if self.intensity == "linear" and self.exposure_target > 0:
            raise ValueError("the linear intensity model has no exposure normalisation "
                             "(exposure_target must be 0)")
        for name, limit in (("depth", MAX_DEPTH), ("width", MAX_WIDTH),
                            ("f1_width", MAX_F1_WIDTH)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {brief_repr(value)}")
            if value > limit:
                raise ValueError(f"{name} must be at most {limit} "
                                 f"(msrnet_napari.config.MAX_{name.upper()}), got {value}")

    @property
    def n_scales(self) -> int:
        return len(self.log_bases)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel depends on (one per 3x3 conv)."""
        return 1 + self.depth

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["log_bases"] = list(self.log_bases)
        for key, default in {**PHOTO_EXPOSURE_DEFAULTS, **LATER_DEFAULTS}.items():  # only when used
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MSRNetConfig":
        known = {*ARCHITECTURE_KEYS, "exposure_target", "exposure_space", "intensity",
                 *PHOTO_EXPOSURE_DEFAULTS, *LATER_DEFAULTS}
        unknown = set(data) - known
        if unknown:
            raise ValueError("unknown MSR-net config keys: "
                             + ", ".join(sorted(brief_repr(k) for k in unknown)[:10]))
        kwargs = dict(data)
        if "log_bases" in kwargs:
            kwargs["log_bases"] = tuple(kwargs["log_bases"])
        return cls(**kwargs)

    def exposure_gain(self, mean: float, quantisation_step: float = 0.0) -> float:
        """Input gain for an image whose exposure statistic (``exposure_statistic`` in
        ``exposure_space``, in [0, 1]) is ``mean`` and whose quantisation step (in [0, 1]
        input units; 0 = unknown) is ``quantisation_step``.

        Brightens dark inputs so their statistic reaches ``exposure_target``; never
        darkens (gain >= 1) and never exceeds the max-gain rule's bound. This removes
        the exposure ambiguity a network with a 1 + depth pixel receptive field
        cannot resolve on its own. Returns 1 when exposure normalisation is off.
        The rule itself lives in :func:`msrnet_napari.exposure.exposure_gain`.
        """
        from .exposure import exposure_gain

        return float(exposure_gain(self, float(mean), float(quantisation_step)))

    @property
    def max_exposure_gain(self) -> float:
        return MAX_LINEAR_EXPOSURE_GAIN if self.exposure_space == "linear" else MAX_EXPOSURE_GAIN

    def engine_dict(self) -> dict[str, Any]:
        """The architecture only: what the compiled engine needs (no intensity keys)."""
        d = self.to_dict()
        return {k: d[k] for k in ARCHITECTURE_KEYS}

    def flops_per_pixel(self) -> int:
        """Multiply-adds x2 of one forward pass, per output pixel."""
        n3, c, w, k, f = 3 * self.n_scales, CHANNELS, self.width, self.depth, self.f1_width
        macs = n3 * f + f * c * 9  # f1
        macs += c * w * 9 + (k - 1) * w * w * 9 + k * w * c  # f2
        macs += c * c  # f3
        return 2 * macs


def check_exposure_space(space: str) -> None:
    """ValueError unless ``space`` is one of EXPOSURE_SPACES."""
    if space not in EXPOSURE_SPACES:
        raise ValueError(f"exposure_space must be one of {EXPOSURE_SPACES}, got "
                         f"{brief_repr(space)}")


def brief_repr(value: Any, limit: int = 60) -> str:
    """``repr`` for error messages about untrusted values (e.g. from a checkpoint):
    bounded in length and time, whatever the value (a memo-shared list nested 40
    deep has 2**40 elements when printed; a 10**6-digit int cannot even be).
    Scalars and short flat sequences are shown, anything else by its type."""
    if value is None or isinstance(value, (bool, float, complex)):
        return repr(value)[:limit]
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= 128 else f"<int of {bits} bits>"
    if isinstance(value, (str, bytes)):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, (list, tuple)) and len(value) <= 8 and all(
            v is None or isinstance(v, (bool, int, float)) for v in value):
        inner = ", ".join(brief_repr(v, limit) for v in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner}{',' * (len(value) == 1)})"
        return text if len(text) <= 2 * limit else text[:2 * limit] + "..."
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"<{type(value).__name__} of {len(value)} items>"
    if hasattr(type(value), "dtype") and hasattr(type(value), "ndim"):  # numpy
        if value.ndim == 0:
            return repr(value)[:limit]
        return f"<{type(value).__name__} of shape {value.shape}, {value.dtype}>"
    return f"<{type(value).__name__}>"


def parameter_shapes(config: MSRNetConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of an MSR-net with this config, in forward order."""
    c, w = CHANNELS, config.width
    shapes: dict[str, tuple[int, ...]] = {
        "f1.fuse.weight": (config.f1_width, c * config.n_scales, 1, 1),
        "f1.fuse.bias": (config.f1_width,),
        "f1.conv.weight": (c, config.f1_width, 3, 3),
        "f1.conv.bias": (c,),
    }
    for m in range(config.depth):
        shapes[f"f2.convs.{m}.weight"] = (w, c if m == 0 else w, 3, 3)
        shapes[f"f2.convs.{m}.bias"] = (w,)
    shapes["f2.fuse.weight"] = (c, config.depth * w, 1, 1)
    shapes["f2.fuse.bias"] = (c,)
    shapes["f3.weight"] = (c, c, 1, 1)
    shapes["f3.bias"] = (c,)
    return shapes


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> MSRNetConfig:
    """Guess the config of a bare state_dict from its shapes.

    depth, width and f1_width follow from the shapes; the log bases cannot, so
    the paper's four bases are assumed when there are 4 scales, and anything
    else is an error (save such models with their config instead).
    """
    try:
        f1_width, in_ch = shapes["f1.fuse.weight"][:2]
        width = shapes["f2.convs.0.weight"][0]
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"not an MSR-net state_dict: missing or malformed {exc}") from exc
    depth = 0
    while f"f2.convs.{depth}.weight" in shapes:
        depth += 1
    default = MSRNetConfig()
    if in_ch != CHANNELS * default.n_scales:
        raise ValueError(
            f"bare state_dict has {in_ch // CHANNELS} log scales; only the default "
            f"{default.n_scales} can be inferred - save the checkpoint with its config"
        )
    return MSRNetConfig(log_bases=default.log_bases, depth=depth, width=int(width),
                        f1_width=int(f1_width))
