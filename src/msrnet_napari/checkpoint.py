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

Hostile files cost bounded time and memory (docs/SECURITY.md). The pickle is
read by a restricted copy of the pure-Python unpickler (its memo is a dict, so
no huge PUT index can make it allocate); every limit lives in this module:

* zip records: only the methods torch writes (stored; deflate accepted), all
  storages together at most ``MAX_STORAGE_BYTES`` (derived from the largest
  architecture ``config.MAX_*`` allows), deflated records together at most
  ``MAX_DEFLATED_BYTES``; rebuilt tensors at most twice the storage bytes read
  plus ``REBUILD_SLACK_BYTES``;
* ``data.pkl``: at most ``MAX_PICKLE_BYTES`` and ``MAX_PICKLE_OPCODES``; dict
  keys and set elements must be scalars (str, int, float, bytes, bool, None:
  cheap to hash, whatever the nesting), REDUCE takes a short argument tuple,
  BUILD only restores an ``OrderedDict``'s attributes (dropped), so the pickle
  can never modify the loader's stand-ins; copying constructors (set,
  frozenset, OrderedDict, ``_codecs.encode``) share a budget proportional to
  the pickle's size; error messages never ``repr`` the file's data unbounded.

I/O errors opening the file (missing file, permissions) propagate as
:class:`OSError` (a dangling symlink says so); a path that is not a regular
file (FIFO, device, directory) is refused before it is read, and every problem
with its *content* is a :class:`CheckpointError` whose message contains the path.
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

from ._safe_open import open_regular
from .config import (
    MAX_DEPTH,
    MAX_F1_WIDTH,
    MAX_LOG_BASES,
    MAX_WIDTH,
    MSRNetConfig,
    brief_repr,
    infer_config,
    parameter_shapes,
)

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint"]

CHECKPOINT_FORMAT = "msrnet-napari"  # written by model.save_checkpoint
CHECKPOINT_VERSION = 1

#: Parameters of the largest MSR-net that config.MAX_* allow (about 37.8M).
MAX_PARAMETERS = sum(math.prod(shape) for shape in parameter_shapes(MSRNetConfig(
    log_bases=tuple(float(v + 1) for v in range(MAX_LOG_BASES)), depth=MAX_DEPTH,
    width=MAX_WIDTH, f1_width=MAX_F1_WIDTH)).values())
# data.pkl of a real checkpoint: 3 kB / 1,100 opcodes (weights only), 10 kB / 3,800
# opcodes (default net with Adam state), ~40 kB / 12,000 opcodes at MAX_DEPTH
MAX_PICKLE_BYTES = 2 * 1024**2
MAX_PICKLE_OPCODES = 100_000
#: all storage records together: float32 weights + two optimizer moments (Adam) of
#: the largest allowed net, plus slack (a float64 copy of it fits as well)
MAX_STORAGE_BYTES = 3 * 4 * MAX_PARAMETERS + 64 * 1024**2
MAX_DEFLATED_BYTES = 64 * 1024**2  # uncompressed size of all deflated records read
MAX_TENSOR_ELEMENTS = 1 << 28  # one rebuilt tensor (stride 0 could inflate a tiny storage)
REBUILD_SLACK_BYTES = 16 * 1024**2  # rebuilt tensors: 2 x storage bytes read + this
MAX_NESTING = 200  # containers inside containers in the payload
MAX_REDUCE_ARGS = 8  # the longest allowed call, _rebuild_tensor_v3, takes 8
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
#: dict keys / set elements: hashing them costs at most their size (a tuple key
#: nested 40 deep through memo references would cost 2**40)
_KEY_TYPES = (str, int, float, bytes, bool, type(None))

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

    def __setstate__(self, state: Any) -> None:  # never reached: BUILD is filtered
        raise CheckpointError(f"malformed pickle: BUILD applied to {self!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")


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
        return f"<storage {self.key!r} {self.stype!r} x{brief_repr(self.numel)}>"

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
                              f"[{minimum}, 2**62), got {brief_repr(value)}")
    return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 32:
        raise CheckpointError(f"malformed tensor: {what} must be a tuple of integers, "
                              f"got {brief_repr(value)}")
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
        raise CheckpointError(f"malformed tensor: dtype is {brief_repr(dtype)}")
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


# The allowed functions take the running unpickler first (for its work budget).
# They are never handed to the pickle themselves: find_class wraps each in a
# fresh, read-only _Call, so nothing in a file can modify them (a BUILD that set
# e.g. _rebuild_tensor_v2.__defaults__ would break every later load).


def _rebuild_tensor(u: Any, storage: Any, storage_offset: Any, size: Any,
                    stride: Any) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(u: Any, storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(u: Any, storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> _Tensor:
    return _rebuild(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(u: Any, data: Any, requires_grad: Any = True,
                       backward_hooks: Any = None, state: Any = None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise CheckpointError(f"malformed parameter: data is {type(data).__name__}")
    return data


def _torch_size(u: Any, dims: Any = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "torch.Size")


def _codecs_encode(u: Any, text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol-2 pickles store bytes objects as _codecs.encode(str, "latin1")
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1",
                                                                               "latin-1"):
        raise CheckpointError(f"forbidden call _codecs.encode({type(text).__name__}, "
                              f"{brief_repr(encoding)})")
    u.charge(len(text))
    return text.encode("latin1")


def _items(u: Any, iterable: Any, what: str) -> list:
    """The elements of a constructor's argument, charged to the work budget."""
    if type(iterable) not in (list, tuple, set, frozenset, dict, OrderedDict):
        raise CheckpointError(f"malformed pickle: {what}() of a {type(iterable).__name__}")
    u.charge(len(iterable))
    return list(iterable)


def _make_set(u: Any, iterable: Any = ()) -> set:
    return set(_check_keys(_items(u, iterable, "set"), "set element"))


def _make_frozenset(u: Any, iterable: Any = ()) -> frozenset:
    return frozenset(_check_keys(_items(u, iterable, "frozenset"), "frozenset element"))


def _make_ordered_dict(u: Any, items: Any = ()) -> OrderedDict:
    if isinstance(items, dict):
        u.charge(len(items))
        return OrderedDict(items)  # its keys were checked when it was filled
    pairs = _items(u, items, "OrderedDict")
    if not all(type(p) in (tuple, list) and len(p) == 2 for p in pairs):
        raise CheckpointError("malformed pickle: OrderedDict() of something other than "
                              "key/value pairs")
    _check_keys([p[0] for p in pairs], "dict key")
    return OrderedDict(pairs)


def _make_complex(u: Any, real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise CheckpointError("malformed pickle: complex() of non-numbers")
    return complex(real, imag)


def _name(text: str) -> str:
    """A module or global name from the pickle, for a message: short, escaped."""
    return repr(text[:80])[1:-1] + ("..." if len(text) > 80 else "")


def _describe(obj: Any) -> str:
    """An object from the pickle, for a message (the loader's own ones by repr)."""
    return repr(obj) if isinstance(obj, _Sealed) else brief_repr(obj)


def _check_keys(keys: Any, what: str) -> Any:
    for k in keys:
        if type(k) not in _KEY_TYPES:
            raise CheckpointError(f"unsupported {what} of type {type(k).__name__} (only "
                                  f"str, int, float, bytes, bool and None are allowed)")
    return keys


# (module, name) -> our stand-in, written module by module
_ALLOWED: dict[tuple[str, str], Any] = {(module, name): fn for module, names in {
    "torch._utils": dict(_rebuild_tensor=_rebuild_tensor, _rebuild_tensor_v2=_rebuild_tensor_v2,
                         _rebuild_tensor_v3=_rebuild_tensor_v3,
                         _rebuild_parameter=_rebuild_parameter,
                         _rebuild_parameter_with_state=_rebuild_parameter),
    "collections": dict(OrderedDict=_make_ordered_dict),
    "torch": dict(Size=_torch_size, UntypedStorage=_UNTYPED),
    "torch.storage": dict(UntypedStorage=_UNTYPED),
    "_codecs": dict(encode=_codecs_encode),
    "builtins": {"set": _make_set, "frozenset": _make_frozenset, "complex": _make_complex},
}.items() for name, fn in names.items()}


class _Call(_Sealed):
    """What the pickle gets for an allowed function: read-only, one per load."""

    __slots__ = ("name", "fn", "unpickler")

    def __init__(self, name: str, fn: Callable[..., Any], unpickler: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "unpickler", unpickler)

    def __call__(self, *args: Any) -> Any:
        return self.fn(self.unpickler, *args)

    def __repr__(self) -> str:
        return f"<allowed global {self.name}>"
_ALLOWED.update({("torch", name): st for name, st in _STORAGE_TYPES.items()})
_ALLOWED.update({("torch", name): dt for name, dt in _DTYPES.items()})

try:  # Python 2 names that protocol <= 2 pickles use (e.g. __builtin__, commands)
    from _compat_pickle import IMPORT_MAPPING as _PY2_MODULES
    from _compat_pickle import NAME_MAPPING as _PY2_NAMES
except ImportError:  # pragma: no cover - CPython always has it
    _PY2_MODULES, _PY2_NAMES = {"__builtin__": "builtins"}, {}


# protocol-5 out-of-band buffers and bytearrays: never written by torch.save, and the
# C unpickler misbehaves on absurd BYTEARRAY8 lengths (it allocates before reading)
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}


def _check_opcodes(data: bytes) -> None:
    """Walk the opcodes without executing them: lengths must fit, no exotic opcodes,
    at most MAX_PICKLE_OPCODES of them (the walk stops there)."""
    try:
        for count, (opcode, _arg, _pos) in enumerate(pickletools.genops(data), 1):
            if opcode.name in _REFUSED_OPCODES:
                raise CheckpointError(f"unsupported pickle opcode {opcode.name}")
            if count > MAX_PICKLE_OPCODES:
                raise CheckpointError(f"pickle has more than {MAX_PICKLE_OPCODES} opcodes "
                                      f"(a checkpoint has a few thousand)")
    except CheckpointError:
        raise
    except Exception as exc:  # unknown opcode, length past the end, no STOP, ...
        raise CheckpointError(f"corrupt pickle data ({_clip(exc)})") from None


_Base = pickle._Unpickler  # the pure-Python one: dict memo, opcodes replaceable
_OP = {name: code[0] for name, code in (
    ("BUILD", pickle.BUILD), ("REDUCE", pickle.REDUCE), ("NEWOBJ", pickle.NEWOBJ),
    ("NEWOBJ_EX", pickle.NEWOBJ_EX), ("SETITEM", pickle.SETITEM),
    ("SETITEMS", pickle.SETITEMS), ("DICT", pickle.DICT), ("ADDITEMS", pickle.ADDITEMS),
    ("FROZENSET", pickle.FROZENSET), ("BYTEARRAY8", pickle.BYTEARRAY8),
    ("NEXT_BUFFER", pickle.NEXT_BUFFER), ("READONLY_BUFFER", pickle.READONLY_BUFFER),
)}


class _RestrictedUnpickler(_Base):
    """Unpickler that never imports anything and knows only ``_ALLOWED``.

    Based on the pure-Python unpickler (whose memo is a dict: a LONG_BINPUT of
    index 2**31 costs one entry, not a 16 GB array) with the opcodes that could
    be abused replaced: BUILD only on an OrderedDict (torch's ``_metadata``,
    dropped), REDUCE/NEWOBJ with a short argument tuple, dict keys and set
    elements scalars only (hashing is then linear), buffers refused.
    """

    dispatch = dict(_Base.dispatch)

    def __init__(self, data: bytes, reader: "_ZipReader") -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._reader = reader
        self._calls: dict[tuple[str, str], _Call] = {}
        self._work = 2 * len(data) + 4096  # elements copying constructors may create

    def charge(self, n: int) -> None:
        self._work -= n
        if self._work < 0:
            raise CheckpointError("the pickle builds far more data than it contains "
                                  "(shared arguments copied over and over)")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PY2_NAMES:  # the same renaming pickle itself applies
            module, name = _PY2_NAMES[(module, name)]
        elif module in _PY2_MODULES:
            module = _PY2_MODULES[module]
        try:
            found = _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"forbidden global {_name(module)}.{_name(name)} in the pickle (only tensors "
                f"and plain containers are allowed; nothing was executed)"
            ) from None
        if isinstance(found, _Sealed):  # dtypes, storage types: immutable singletons
            return found
        call = self._calls.get((module, name))
        if call is None:
            call = self._calls[(module, name)] = _Call(f"{module}.{name}", found, self)
        return call

    def persistent_load(self, pid: Any) -> _Storage:
        if type(pid) is not tuple or len(pid) != 5:
            raise CheckpointError(f"malformed persistent id {brief_repr(pid)}")
        typename, stype, key, location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii", "replace")
        if typename != "storage":
            raise CheckpointError(f"unknown persistent id type {brief_repr(typename)}")
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"malformed persistent id: storage type {_describe(stype)}")
        if type(key) is not str or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
            raise CheckpointError(f"malformed persistent id: storage key {brief_repr(key)}")
        if not isinstance(location, (str, bytes)):
            raise CheckpointError(f"malformed persistent id: location {brief_repr(location)}")
        numel = _int(numel, "storage size")
        return _Storage(self._reader, key, stype, numel)

    # ---- replaced opcodes

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is OrderedDict and type(state) is dict:
            return  # torch's state_dict._metadata: not needed, dropped
        raise CheckpointError(f"malformed pickle: BUILD applied to {_describe(inst)} (only "
                              f"an OrderedDict's attributes can be restored)")

    def _args(self, args: Any, what: str) -> tuple:
        if type(args) is not tuple or len(args) > MAX_REDUCE_ARGS:
            raise CheckpointError(f"malformed pickle: {what} with arguments "
                                  f"{brief_repr(args)} (a short tuple expected)")
        return args

    def _load_reduce(self) -> None:
        args = self._args(self.stack.pop(), "REDUCE")
        func = self.stack[-1]
        if not isinstance(func, _Call):
            raise CheckpointError(f"malformed pickle: REDUCE calls {_describe(func)}")
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:  # no allowed global is a class
        raise CheckpointError(f"malformed pickle: NEWOBJ of {_describe(self.stack[-2])}")

    def _load_setitem(self) -> None:
        _check_keys((self.stack[-2],), "dict key")
        _Base.load_setitem(self)

    def _load_setitems(self) -> None:  # the items since the MARK are self.stack
        _check_keys(self.stack[0::2], "dict key")
        _Base.load_setitems(self)

    def _load_dict(self) -> None:
        _check_keys(self.stack[0::2], "dict key")
        _Base.load_dict(self)

    def _load_additems(self) -> None:
        _check_keys(self.stack, "set element")
        _Base.load_additems(self)

    def _load_frozenset(self) -> None:
        _check_keys(self.stack, "frozenset element")
        _Base.load_frozenset(self)

    def _refused(self) -> None:
        raise CheckpointError("unsupported pickle opcode (buffers are never written by "
                              "torch.save)")

    dispatch[_OP["BUILD"]] = _load_build
    dispatch[_OP["REDUCE"]] = _load_reduce
    dispatch[_OP["NEWOBJ"]] = _load_newobj
    dispatch[_OP["NEWOBJ_EX"]] = _load_newobj
    dispatch[_OP["SETITEM"]] = _load_setitem
    dispatch[_OP["SETITEMS"]] = _load_setitems
    dispatch[_OP["DICT"]] = _load_dict
    dispatch[_OP["ADDITEMS"]] = _load_additems
    dispatch[_OP["FROZENSET"]] = _load_frozenset
    for _op in ("BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"):
        dispatch[_OP[_op]] = _refused
    del _op


# --------------------------------------------------------------------------
# the zip container


class _ZipReader:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self._storages: dict[str, bytes] = {}
        self._total = 0  # bytes of the storage records read
        self._deflated = 0  # uncompressed bytes of the deflated records read
        # rebuilt tensors may not outgrow the storages read by much (zero strides or
        # many overlapping views could otherwise turn a tiny file into gigabytes)
        self._spent = 0
        names = zf.namelist()
        pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if not pickles:
            if any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError("TorchScript archives are not supported; save the "
                                      "model's state_dict with torch.save")
            raise CheckpointError("zip archive has no <archive>/data.pkl: not a PyTorch "
                                  "checkpoint")
        if len(pickles) > 1:
            raise CheckpointError(f"zip archive has {len(pickles)} data.pkl records: "
                                  f"{', '.join(brief_repr(n) for n in pickles[:3])}...")
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

    def spend(self, nbytes: int) -> None:
        if self._spent + nbytes > 2 * self._total + REBUILD_SLACK_BYTES:
            raise CheckpointError("tensors rebuilt from the storages exceed the size of the "
                                  "storages by too much (overlapping or zero-stride views)")
        self._spent += nbytes

    def _read(self, name: str, limit: int) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"missing record {name!r}") from None
        if info.compress_type not in _ZIP_METHODS:
            raise CheckpointError(
                f"record {name!r} uses zip compression method {info.compress_type}; only "
                f"stored (what torch.save writes) and deflate records are read")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"record {name!r} is encrypted")
        if info.file_size > limit:
            raise CheckpointError(f"record {name!r} is too large ({info.file_size} bytes, "
                                  f"limit {limit})")
        if info.compress_type == zipfile.ZIP_DEFLATED:
            if self._deflated + info.file_size > MAX_DEFLATED_BYTES:
                raise CheckpointError(f"deflated records exceed {MAX_DEFLATED_BYTES} bytes "
                                      f"uncompressed (torch.save writes stored records)")
            self._deflated += info.file_size
        # zipfile stops at the declared size (then checks the CRC), deflate in chunks
        data = self.zf.read(info)
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
                raise CheckpointError(f"storages exceed {MAX_STORAGE_BYTES} bytes (the "
                                      f"largest net config.MAX_* allow, with optimizer state)")
            data = self._read(name, MAX_STORAGE_BYTES - self._total)
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
            raise CheckpointError(f"payload contains {_describe(obj)}, which is not plain "
                                  f"data")
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
        raise CheckpointError(f"unknown checkpoint format {brief_repr(fmt)} (expected "
                              f"{CHECKPOINT_FORMAT!r})")
    if fmt == CHECKPOINT_FORMAT:
        version = payload.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointError(f"bad checkpoint version {brief_repr(version)}")
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
        f"{list(_STATE_DICT_KEYS)}, got keys {_some(payload)}"
    )


def _some(keys: Any, n: int = 10) -> str:
    """At most n keys, bounded, for a message."""
    keys = list(keys)
    shown = ", ".join(sorted(brief_repr(k) for k in keys[:n]))
    return f"[{shown}{f', ... ({len(keys) - n} more)' if len(keys) > n else ''}]"


def _strip_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in _STRIPPED_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _to_weights(state: Mapping[Any, Any], config: MSRNetConfig) -> dict[str, np.ndarray]:
    expected = parameter_shapes(config)
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"state_dict keys must be strings, got {_some(bad_keys, 5)}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_some(unexpected)}")
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
        raise CheckpointError(f"truncated or corrupt zip archive ({_clip(exc)})") from None
    with zf:
        reader = _ZipReader(zf)
        data = reader.pickle_bytes()
        _check_opcodes(data)
        try:
            raw = _RestrictedUnpickler(data, reader).load()
        except CheckpointError:
            raise
        except Exception as exc:  # any malformed pickle, in any way
            raise CheckpointError(f"corrupt pickle data ({type(exc).__name__}: "
                                  f"{_clip(exc)})") from None
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
            raise CheckpointError(f"bad config ({exc})") from None
    # config.MAX_* bound the architecture (MSRNetConfig checks them), so
    # parameter_shapes and the weights below are bounded too
    weights = _to_weights(state, config)
    return Checkpoint(config=config, weights=weights, metadata=metadata, source=path)


def _clip(exc: Any, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _open_regular(path: str) -> io.BufferedReader:
    """Open ``path`` for reading, refusing anything but a regular file *before* reading."""
    return open_regular(path, lambda kind: CheckpointError(
        f"cannot load checkpoint {path}: it is {kind}, not a regular file"))


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint without torch and without executing anything.

    Raises :class:`CheckpointError` (a ``ValueError``) with the path in the
    message for anything wrong with the file's content, or when the path is
    not a regular file (FIFO, device, directory: refused without reading);
    ``OSError`` (e.g. ``FileNotFoundError``, which names a dangling symlink as
    such) only if the file cannot be opened.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    with _open_regular(path) as fh:
        try:
            return _build(_read_payload(fh), path)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from None
        except Exception as exc:  # zip/CRC/zlib/seek errors on a corrupt file
            raise CheckpointError(f"cannot load checkpoint {path}: corrupt file "
                                  f"({type(exc).__name__}: {_clip(exc)})") from None
