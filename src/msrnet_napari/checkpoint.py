"""Safe loader for MSR-net checkpoints written by ``torch.save``.

No torch here and nothing is ever executed: the zip file's ``data.pkl`` is read
with a restricted :class:`pickle.Unpickler` that knows only the handful of
globals a plain ``torch.save`` of tensors and plain containers produces
(tensor/parameter rebuild functions, storage and dtype names,
``collections.OrderedDict``, ``torch.Size``, ``_codecs.encode``, ``set``,
``frozenset``, ``complex``).  Each of them is replaced by a local, validating
stand-in; every other global (``os.system``, ``builtins.eval``, any class)
is refused *before* anything is imported, with a :class:`CheckpointError`
naming it.  Tensor data is read from the zip's raw storages into numpy arrays
with bounds checks, so a crafted size/stride/offset cannot read outside its
storage.

Supported layout (``torch.save`` default since torch 1.6)::

    <archive>/data.pkl        pickle of the payload (persistent ids for storages)
    <archive>/data/<key>      raw bytes of one storage
    <archive>/byteorder       "little" or "big" (absent in old files: little)

Accepted payloads: the package's own format (see docs/ARCHITECTURE.md)
``{"format": "msrnet-napari", "version": 1, "config": {...}, "state_dict":
{...}, **extra}``; a dict holding ``state_dict`` / ``model_state_dict`` /
``model`` (+ optional ``config``); or a bare state_dict (config inferred from
the shapes).  A ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile)
prefix shared by every key is stripped.

I/O errors opening the file (missing file, permissions) propagate as
:class:`OSError`; every problem with its *content* is a :class:`CheckpointError`
whose message contains the path.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .config import MSRNetConfig, infer_config, parameter_shapes

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint"]

CHECKPOINT_FORMAT = "msrnet-napari"  # written by model.save_checkpoint
CHECKPOINT_VERSION = 1

MAX_PICKLE_BYTES = 64 * 1024**2  # data.pkl of a real checkpoint is a few kB
MAX_STORAGE_BYTES = 4 * 1024**3  # all storages together
MAX_TENSOR_ELEMENTS = 1 << 28  # one rebuilt tensor (stride 0 could inflate a tiny storage)
REBUILD_SLACK_BYTES = 256 * 1024**2  # rebuilt tensors may exceed the stored bytes by this
MAX_NESTING = 200  # containers inside containers in the payload

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """The file is not a loadable, valid MSR-net checkpoint."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A validated checkpoint, independent of torch.

    ``weights`` holds exactly the entries of ``parameter_shapes(config)``,
    float32, C-contiguous, PyTorch (out, in, kh, kw) layout. ``metadata`` is
    the rest of the payload (e.g. step, metrics) as plain Python data with
    tensors converted to numpy arrays. ``source`` is where it came from.
    (``eq=False``: compared and hashed by identity, so it can key caches.)
    """

    config: MSRNetConfig
    weights: dict[str, np.ndarray]
    metadata: dict[str, Any]
    source: str


# --------------------------------------------------------------------------
# stand-ins for the allowed globals


class _Sealed:
    """Base of the unpickler's private objects: pickle's BUILD cannot touch them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"malformed pickle: BUILD applied to {self!r}")


class _DType(_Sealed):
    """A torch dtype / storage element type, as numpy sees it."""

    __slots__ = ("name", "np_dtype", "bfloat16")

    def __init__(self, name: str, np_dtype: str, bfloat16: bool = False) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "np_dtype", np.dtype(np_dtype))
        object.__setattr__(self, "bfloat16", bfloat16)  # stored as uint16 bit patterns

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_DTYPES: dict[str, _DType] = {}
for _names, _np, _bf in [
    (("float32", "float"), "float32", False),
    (("float64", "double"), "float64", False),
    (("float16", "half"), "float16", False),
    (("bfloat16",), "uint16", True),
    (("int64", "long"), "int64", False),
    (("int32", "int"), "int32", False),
    (("int16", "short"), "int16", False),
    (("int8",), "int8", False),
    (("uint8",), "uint8", False),
    (("uint16",), "uint16", False),
    (("uint32",), "uint32", False),
    (("uint64",), "uint64", False),
    (("bool",), "bool", False),
    (("complex64", "cfloat"), "complex64", False),
    (("complex128", "cdouble"), "complex128", False),
]:
    _dt = _DType(_names[0], _np, _bf)
    for _n in _names:
        _DTYPES[_n] = _dt

_UINT8 = _DTYPES["uint8"]


class _StorageType(_Sealed):
    """``torch.FloatStorage`` & co (typed) or ``torch.UntypedStorage`` (bytes)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: _DType) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_TYPES: dict[str, _StorageType] = {
    name: _StorageType(name, _DTYPES[dt])
    for name, dt in [
        ("FloatStorage", "float32"),
        ("DoubleStorage", "float64"),
        ("HalfStorage", "float16"),
        ("BFloat16Storage", "bfloat16"),
        ("LongStorage", "int64"),
        ("IntStorage", "int32"),
        ("ShortStorage", "int16"),
        ("CharStorage", "int8"),
        ("ByteStorage", "uint8"),
        ("BoolStorage", "bool"),
        ("ComplexFloatStorage", "complex64"),
        ("ComplexDoubleStorage", "complex128"),
    ]
}
_UNTYPED = _StorageType("UntypedStorage", _UINT8)


class _Storage(_Sealed):
    """One ``<archive>/data/<key>`` record; its bytes are read on first use."""

    __slots__ = ("reader", "key", "stype", "numel")

    def __init__(self, reader: "_ZipReader", key: str, stype: _StorageType, numel: int) -> None:
        object.__setattr__(self, "reader", reader)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "stype", stype)
        object.__setattr__(self, "numel", numel)

    def __repr__(self) -> str:
        return f"<storage {self.key!r} {self.stype!r} x{self.numel}>"

    def flat(self, dtype: _DType) -> np.ndarray:
        """The storage as a read-only 1-D array of ``dtype`` (file byte order)."""
        raw = self.reader.storage_bytes(self.key, self.numel * self.stype.dtype.np_dtype.itemsize)
        np_dtype = dtype.np_dtype.newbyteorder(self.reader.byteorder)
        if len(raw) % np_dtype.itemsize:
            raise CheckpointError(
                f"storage {self.key!r} ({len(raw)} bytes) is not a whole number of "
                f"{dtype!r} elements"
            )
        return np.frombuffer(raw, dtype=np_dtype)


class _Tensor(_Sealed):
    """A rebuilt tensor; turned into a plain numpy array after unpickling."""

    __slots__ = ("array", "bfloat16")

    def __init__(self, array: np.ndarray, bfloat16: bool) -> None:
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "bfloat16", bfloat16)

    def __repr__(self) -> str:
        return f"<tensor {self.array.shape}>"

    def to_numpy(self) -> np.ndarray:
        a = self.array
        if self.bfloat16:  # bfloat16 = upper half of a float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or value >= 1 << 62):
        raise CheckpointError(f"malformed tensor: {what} must be an integer in "
                              f"[{minimum}, 2**62), got {value!r}")
    return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 32:
        raise CheckpointError(f"malformed tensor: {what} must be a tuple of integers, "
                              f"got {value!r}")
    return tuple(_int(v, what) for v in value)


def _rebuild(storage: Any, storage_offset: Any, size: Any, stride: Any,
             dtype: _DType | None = None) -> _Tensor:
    """Bounds-checked ``as_strided`` view of a storage, copied to a C-contiguous array."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"malformed tensor: storage is {type(storage).__name__}, "
                              f"not a saved storage")
    if dtype is None:
        dtype = storage.stype.dtype
    elif not isinstance(dtype, _DType):
        raise CheckpointError(f"malformed tensor: dtype is {dtype!r}")
    offset = _int(storage_offset, "storage_offset")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"malformed tensor: size {size} and stride {stride} differ in "
                              f"length")
    count = math.prod(size)
    if count > MAX_TENSOR_ELEMENTS:
        raise CheckpointError(f"tensor of shape {size} is too large ({count} elements)")
    flat = storage.flat(dtype)
    storage.reader.spend(count * flat.itemsize)
    if count == 0:
        out = np.zeros(size, dtype=flat.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise CheckpointError(
                f"malformed tensor: shape {size}, stride {stride}, offset {offset} reads "
                f"element {last} of storage {storage.key!r} which has {flat.size}"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride],
            writeable=False,
        )
        out = np.array(view, order="C", copy=True)
    out = out.astype(out.dtype.newbyteorder("="), order="C", copy=False)  # native order
    return _Tensor(out, dtype.bfloat16)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise CheckpointError(f"malformed parameter: data is {type(data).__name__}")
    return data


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "torch.Size")


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol-2 pickles store bytes objects as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"forbidden call _codecs.encode({type(text).__name__}, "
                              f"{encoding!r})")
    return text.encode("latin1")


def _plain_constructor(kind: type) -> Callable[..., Any]:
    def make(*args: Any) -> Any:
        return kind(*args)

    make.__name__ = kind.__name__
    return make


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _plain_constructor(OrderedDict),
    ("torch", "Size"): _torch_size,
    ("torch", "UntypedStorage"): _UNTYPED,
    ("torch.storage", "UntypedStorage"): _UNTYPED,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _plain_constructor(set),
    ("builtins", "frozenset"): _plain_constructor(frozenset),
    ("builtins", "complex"): _plain_constructor(complex),
}
_ALLOWED.update({("torch", name): st for name, st in _STORAGE_TYPES.items()})
_ALLOWED.update({("torch", name): dt for name, dt in _DTYPES.items()})

try:  # Python 2 names that protocol <= 2 pickles use (e.g. __builtin__, commands)
    from _compat_pickle import IMPORT_MAPPING as _PY2_MODULES, NAME_MAPPING as _PY2_NAMES
except ImportError:  # pragma: no cover - CPython always has it
    _PY2_MODULES, _PY2_NAMES = {"__builtin__": "builtins"}, {}


# protocol-5 out-of-band buffers and bytearrays: never written by torch.save, and the
# C unpickler misbehaves on absurd BYTEARRAY8 lengths (it allocates before reading)
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}


def _check_opcodes(data: bytes) -> None:
    """Walk the opcodes without executing them: lengths must fit, no exotic opcodes."""
    try:
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES:
                raise CheckpointError(f"unsupported pickle opcode {opcode.name}")
    except CheckpointError:
        raise
    except Exception as exc:  # unknown opcode, length past the end, no STOP, ...
        raise CheckpointError(f"corrupt pickle data ({exc})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that never imports anything and knows only ``_ALLOWED``."""

    def __init__(self, data: bytes, reader: "_ZipReader") -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PY2_NAMES:  # the same renaming pickle itself applies
            module, name = _PY2_NAMES[(module, name)]
        elif module in _PY2_MODULES:
            module = _PY2_MODULES[module]
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"forbidden global {module}.{name} in the pickle (only tensors and plain "
                f"containers are allowed; nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise CheckpointError(f"malformed persistent id {pid!r}")
        typename, stype, key, location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii", "replace")
        if typename != "storage":
            raise CheckpointError(f"unknown persistent id type {typename!r}")
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"malformed persistent id: storage type {stype!r}")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
            raise CheckpointError(f"malformed persistent id: storage key {key!r}")
        if not isinstance(location, (str, bytes)):
            raise CheckpointError(f"malformed persistent id: location {location!r}")
        numel = _int(numel, "storage size")
        return _Storage(self._reader, key, stype, numel)


# --------------------------------------------------------------------------
# the zip container


class _ZipReader:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        names = zf.namelist()
        pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if not pickles:
            if any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError("TorchScript archives are not supported; save the "
                                      "model's state_dict with torch.save")
            raise CheckpointError("zip archive has no <archive>/data.pkl: not a PyTorch "
                                  "checkpoint")
        if len(pickles) > 1:
            raise CheckpointError(f"zip archive has several data.pkl records: {pickles}")
        self.prefix = pickles[0][: -len("data.pkl")]
        if self.prefix + "constants.pkl" in names:
            raise CheckpointError("TorchScript archives are not supported; save the "
                                  "model's state_dict with torch.save")
        self.byteorder = "<"
        if self.prefix + "byteorder" in names:
            mark = self._read(self.prefix + "byteorder", 16)
            if mark not in (b"little", b"big"):
                raise CheckpointError(f"unknown byteorder record {mark[:16]!r}")
            self.byteorder = "<" if mark == b"little" else ">"
        self._storages: dict[str, bytes] = {}
        self._total = 0
        # rebuilt tensors may not outgrow the file's storages by much (zero strides or
        # many overlapping views could otherwise turn a tiny file into gigabytes)
        stored = sum(i.file_size for i in zf.infolist()
                     if i.filename.startswith(self.prefix + "data/"))
        self._budget = min(stored, MAX_STORAGE_BYTES) + REBUILD_SLACK_BYTES

    def spend(self, nbytes: int) -> None:
        if nbytes > self._budget:
            raise CheckpointError("tensors rebuilt from the storages exceed the size of the "
                                  "storages by too much (overlapping or zero-stride views)")
        self._budget -= nbytes

    def _read(self, name: str, limit: int) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"missing record {name!r}") from None
        if info.file_size > limit:
            raise CheckpointError(f"record {name!r} is too large ({info.file_size} bytes, "
                                  f"limit {limit})")
        data = self.zf.read(info)  # checks the CRC
        if len(data) != info.file_size:
            raise CheckpointError(f"record {name!r} is truncated")
        return data

    def pickle_bytes(self) -> bytes:
        return self._read(self.prefix + "data.pkl", MAX_PICKLE_BYTES)

    def storage_bytes(self, key: str, nbytes: int) -> bytes:
        if key in self._storages:
            data = self._storages[key]
        else:
            name = f"{self.prefix}data/{key}"
            try:
                size = self.zf.getinfo(name).file_size
            except KeyError:
                raise CheckpointError(f"storage {key!r} is missing (no record {name!r})") \
                    from None
            if self._total + size > MAX_STORAGE_BYTES:
                raise CheckpointError(f"storages exceed {MAX_STORAGE_BYTES} bytes")
            data = self._read(name, MAX_STORAGE_BYTES)
            self._total += len(data)
            self._storages[key] = data
        if len(data) < nbytes:
            raise CheckpointError(f"storage {key!r} is truncated: {len(data)} bytes, "
                                  f"expected {nbytes}")
        if len(data) > nbytes:
            raise CheckpointError(f"storage {key!r} has {len(data)} bytes, expected {nbytes}")
        return data


# --------------------------------------------------------------------------
# payload -> Checkpoint


def _plain(obj: Any, memo: dict[int, Any], active: set[int], depth: int = 0) -> Any:
    """Unpickled object -> plain data (dict/list/tuple/set/scalars/str/bytes/ndarray)."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return obj
    if depth > MAX_NESTING:
        raise CheckpointError(f"payload is nested more than {MAX_NESTING} levels deep")
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if oid in active:
        raise CheckpointError("payload contains a recursive structure")
    active.add(oid)
    try:
        if isinstance(obj, _Tensor):
            out: Any = obj.to_numpy()
        elif isinstance(obj, _Storage):
            out = _rebuild(obj, 0, (obj.numel,), (1,)).to_numpy()
        elif isinstance(obj, bytearray):
            out = bytes(obj)
        elif isinstance(obj, dict):  # also OrderedDict (its _metadata attribute is dropped)
            out = {}
            for k, v in obj.items():
                out[_plain(k, memo, active, depth + 1)] = _plain(v, memo, active, depth + 1)
        elif isinstance(obj, list):
            out = [_plain(v, memo, active, depth + 1) for v in obj]
        elif isinstance(obj, tuple):
            out = tuple(_plain(v, memo, active, depth + 1) for v in obj)
        elif isinstance(obj, (set, frozenset)):
            out = type(obj)(_plain(v, memo, active, depth + 1) for v in obj)
        else:
            raise CheckpointError(f"payload contains a {type(obj).__name__} ({obj!r}), "
                                  f"which is not plain data")
    finally:
        active.discard(oid)
    memo[oid] = out
    return out


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) for k in value)
            and all(isinstance(v, np.ndarray) for v in value.values()))


def _split_payload(payload: Any) -> tuple[dict[str, np.ndarray], Any, dict[str, Any]]:
    """-> (state_dict, config dict or None, metadata)."""
    if not isinstance(payload, dict):
        raise CheckpointError(f"payload is a {type(payload).__name__}, expected a dict "
                              f"(state_dict or msrnet-napari checkpoint)")
    fmt = payload.get("format")
    if fmt is not None and fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"unknown checkpoint format {fmt!r} (expected "
                              f"{CHECKPOINT_FORMAT!r})")
    if fmt == CHECKPOINT_FORMAT:
        version = payload.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointError(f"bad checkpoint version {version!r}")
        if version > CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint version {version} was written by a newer "
                                  f"msrnet-napari (this one reads <= {CHECKPOINT_VERSION})")
    for key in _STATE_DICT_KEYS:
        if key in payload and (key != "model" or _is_state_dict(payload[key])):
            state = payload[key]
            if not isinstance(state, dict):
                raise CheckpointError(f"{key!r} is a {type(state).__name__}, expected a "
                                      f"dict of tensors")
            skip = {key, "config", "format", "version"}
            metadata = {k: v for k, v in payload.items() if k not in skip}
            return state, payload.get("config"), metadata
    if fmt is None and payload and all(isinstance(v, np.ndarray) for v in payload.values()):
        return payload, None, {}  # bare state_dict
    raise CheckpointError(
        f"no state_dict found: expected a dict of tensors or one of the keys "
        f"{list(_STATE_DICT_KEYS)}, got keys {sorted(map(str, payload))[:20]}"
    )


def _strip_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in _STRIPPED_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _to_weights(state: Mapping[Any, Any], config: MSRNetConfig) -> dict[str, np.ndarray]:
    expected = parameter_shapes(config)
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"state_dict keys must be strings, got {bad_keys[:5]}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise CheckpointError(f"state_dict does not match {config}: " + "; ".join(parts))
    weights: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        value = state[name]
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{name} is a {type(value).__name__}, not a tensor")
        if value.dtype.kind != "f":
            raise CheckpointError(f"{name} has dtype {value.dtype}, expected floating point")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{name} has shape {tuple(value.shape)}, expected {shape} "
                                  f"for {config}")
        array = np.array(value, dtype=np.float32, order="C")  # own copy
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise CheckpointError(f"{name} has {bad} non-finite value(s) (NaN/inf)")
        weights[name] = array
    return weights


def _read_payload(fh: Any) -> Any:
    head = fh.read(4)
    if not head:
        raise CheckpointError("file is empty")
    if head[:2] != b"PK":
        if head[:1] == b"\x80":
            raise CheckpointError("legacy/non-zip format not supported, re-save with "
                                  "torch>=1.6 (torch.save's default zip format)")
        raise CheckpointError("not a PyTorch checkpoint (not a zip archive; the "
                              "legacy/non-zip format is not supported, re-save with "
                              "torch>=1.6)")
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except Exception as exc:  # BadZipFile, EOFError, OSError on a bad seek, ...
        raise CheckpointError(f"truncated or corrupt zip archive ({exc})") from None
    with zf:
        reader = _ZipReader(zf)
        data = reader.pickle_bytes()
        _check_opcodes(data)
        try:
            raw = _RestrictedUnpickler(data, reader).load()
        except CheckpointError:
            raise
        except Exception as exc:  # any malformed pickle, in any way
            raise CheckpointError(f"corrupt pickle data ({type(exc).__name__}: {exc})") \
                from None
        return _plain(raw, {}, set())


def _build(payload: Any, path: str) -> Checkpoint:
    state, config_dict, metadata = _split_payload(payload)
    state = _strip_prefix(state)
    if config_dict is None:
        try:
            config = infer_config({k: tuple(v.shape) for k, v in state.items()
                                   if isinstance(v, np.ndarray)})
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"cannot infer the config of a bare state_dict: {exc}") \
                from None
    else:
        if not isinstance(config_dict, dict):
            raise CheckpointError(f"config is a {type(config_dict).__name__}, expected a dict")
        try:
            config = MSRNetConfig.from_dict(config_dict)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"bad config {config_dict!r}: {exc}") from None
    if config.depth > len(state):  # cheap guard: parameter_shapes loops over depth
        raise CheckpointError(f"config depth {config.depth} cannot match a state_dict of "
                              f"{len(state)} entries")
    weights = _to_weights(state, config)
    return Checkpoint(config=config, weights=weights, metadata=metadata, source=path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint without torch and without executing anything.

    Raises :class:`CheckpointError` (a ``ValueError``) with the path in the
    message for anything wrong with the file's content; ``OSError`` (e.g.
    ``FileNotFoundError``) only if the file cannot be opened.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    with open(path, "rb") as fh:
        try:
            return _build(_read_payload(fh), path)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from None
        except Exception as exc:  # zip/CRC/zlib/seek errors on a corrupt file
            raise CheckpointError(f"cannot load checkpoint {path}: corrupt file "
                                  f"({type(exc).__name__}: {exc})") from None
