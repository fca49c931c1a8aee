"""Tests for the torch-free, non-executing checkpoint loader."""

from __future__ import annotations

import io
import operator
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from msrnet_napari import checkpoint as ckmod
from msrnet_napari.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from msrnet_napari.config import MSRNetConfig, parameter_shapes

SMALL = MSRNetConfig(log_bases=(1.0, 10.0, 100.0, 300.0), depth=3, width=8, f1_width=4)


# --------------------------------------------------------------------------
# helpers that need torch (to create real torch.save files)


def _torch():
    return pytest.importorskip("torch")


def _model(config=SMALL, seed=0):
    _torch()
    from msrnet_napari.training.model import MSRNet, init_weights

    return init_weights(MSRNet(config), seed=seed)


def _state(config=SMALL, seed=0):
    return {k: v.detach().clone() for k, v in _model(config, seed).state_dict().items()}


def _payload(config=SMALL, state=None, **extra):
    return {"format": "msrnet-napari", "version": 1, "config": config.to_dict(),
            "state_dict": _state(config) if state is None else state, **extra}


def _save(obj, path):
    torch = _torch()
    torch.save(obj, path)
    return path


def _assert_same(ckpt: Checkpoint, state) -> None:
    assert set(ckpt.weights) == set(state)
    for k, v in state.items():
        w = ckpt.weights[k]
        assert w.dtype == np.float32 and w.flags.c_contiguous
        np.testing.assert_array_equal(w, v.detach().float().numpy())


def _fails(path, *fragments) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --------------------------------------------------------------------------
# helper that crafts torch-style zips without torch (arbitrary pickles)


def _crafted_zip(path, pickle_bytes, storages=None, byteorder=b"little", archive="arch"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", pickle_bytes)
        if byteorder is not None:
            zf.writestr(f"{archive}/byteorder", byteorder)
        zf.writestr(f"{archive}/version", b"3\n")
        for key, data in (storages or {}).items():
            zf.writestr(f"{archive}/data/{key}", data)
    return path


class _Ref:
    """Pickles as GLOBAL <placeholder>; the placeholder is renamed afterwards."""

    def __init__(self, placeholder, args, state=None):
        self.placeholder, self.args, self.state = placeholder, args, state

    def __reduce__(self):
        if self.state is None:
            return (self.placeholder, self.args)
        return (self.placeholder, self.args, self.state)


class _PersistentStorage:
    def __init__(self, key, numel, stype=operator.sub):
        self.pid = ("storage", stype, key, "cpu", numel)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _PersistentStorage) else None


def _pickle(obj, renames) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    for old, new in renames.items():
        assert old in data
        data = data.replace(old, new)
    return data


_REBUILD = {b"c_operator\nadd\n": b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"c_operator\nsub\n": b"ctorch\nFloatStorage\n"}


def _tensor_pickle(size, stride, offset=0, numel=6, key="0", state=None):
    tensor = _Ref(operator.add, (_PersistentStorage(key, numel), offset, tuple(size),
                                 tuple(stride), False, OrderedDict()), state)
    return _pickle({"x": tensor}, _REBUILD)


def _raw_payload(path):
    with open(path, "rb") as fh:
        return ckmod._read_payload(fh)


# --------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("config", [
    MSRNetConfig(),
    SMALL,
    MSRNetConfig(log_bases=(2.0, 50.0), depth=1, width=5, f1_width=1),
    MSRNetConfig(log_bases=(1.0, 3.0, 9.0, 27.0, 81.0, 243.0), depth=4, width=16, f1_width=6),
])
def test_round_trip_save_checkpoint_equals_torch_load(tmp_path, config):
    torch = _torch()
    from msrnet_napari.training.model import save_checkpoint

    model = _model(config, seed=3)
    path = save_checkpoint(model, tmp_path / "m.pt", step=1234,
                           metrics={"psnr": 21.5, "loss": torch.tensor(0.25)})
    ckpt = load_checkpoint(path)
    assert ckpt.config == config
    assert ckpt.source == str(path)
    assert list(ckpt.weights) == list(parameter_shapes(config))
    reference = torch.load(path, weights_only=True)
    _assert_same(ckpt, reference["state_dict"])
    for k, shape in parameter_shapes(config).items():
        assert ckpt.weights[k].shape == shape
    assert ckpt.metadata["step"] == 1234
    assert ckpt.metadata["metrics"]["psnr"] == 21.5
    loss = ckpt.metadata["metrics"]["loss"]
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float32
    assert float(loss) == 0.25
    assert not {"format", "version", "config", "state_dict"} & set(ckpt.metadata)


def test_model_from_checkpoint_reproduces_outputs(tmp_path):
    torch = _torch()
    from msrnet_napari.training.model import model_from_checkpoint, save_checkpoint

    model = _model(SMALL, seed=5).eval()
    path = save_checkpoint(model, tmp_path / "m.pt")
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model_from_checkpoint(path)(x))


def test_bare_state_dict_infers_config(tmp_path):
    config = MSRNetConfig(depth=2, width=6, f1_width=5)  # default 4 log bases
    model = _model(config)
    path = _save(model.state_dict(), tmp_path / "bare.pt")  # an OrderedDict with _metadata
    ckpt = load_checkpoint(path)
    assert ckpt.config == config
    assert ckpt.metadata == {}
    _assert_same(ckpt, model.state_dict())


def test_bare_state_dict_with_other_scale_count_cannot_be_inferred(tmp_path):
    state = _state(MSRNetConfig(log_bases=(1.0, 5.0), depth=2, width=4))
    path = _save(state, tmp_path / "bare2.pt")
    _fails(path, "infer", "log scales")


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_common_wrapper_keys(tmp_path, key):
    state = _state()
    path = _save({key: state, "epoch": 7, "optimizer_state_dict": {"lr": 0.1}},
                 tmp_path / "w.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.config == MSRNetConfig(depth=3, width=8, f1_width=4)
    _assert_same(ckpt, state)
    assert ckpt.metadata == {"epoch": 7, "optimizer_state_dict": {"lr": 0.1}}


def test_parameters_in_ordered_dict(tmp_path):
    model = _model()
    params = OrderedDict(model.named_parameters())  # torch.nn.Parameter objects
    assert all(type(p).__name__ == "Parameter" for p in params.values())
    path = _save(_payload(state=params), tmp_path / "params.pt")
    _assert_same(load_checkpoint(path), params)


def test_non_contiguous_and_shared_storage_tensors(tmp_path):
    torch = _torch()
    shapes = parameter_shapes(SMALL)
    total = sum(int(np.prod(s)) for s in shapes.values())
    big = torch.randn(total + 11, generator=torch.Generator().manual_seed(1))
    state, pos = {}, 7
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        flat = big[pos:pos + n]  # views with storage offsets into one shared storage
        pos += n
        if len(shape) == 4 and shape[0] > 1 and shape[1] > 1:
            t = flat.view(shape[1], shape[0], *shape[2:]).transpose(0, 1)  # strided view
            assert not t.is_contiguous() and t.storage_offset() > 0
        else:
            t = flat.view(shape)
        state[name] = t
    assert any(not t.is_contiguous() for t in state.values())
    path = tmp_path / "views.pt"
    torch.save(_payload(state=state), path)
    ckpt = load_checkpoint(path)
    _assert_same(ckpt, state)
    reference = torch.load(path, weights_only=True)["state_dict"]
    for k, v in reference.items():
        np.testing.assert_array_equal(ckpt.weights[k], v.numpy())


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_low_and_high_precision_weights_become_float32(tmp_path, dtype):
    torch = _torch()
    state = {k: v.to(getattr(torch, dtype)) for k, v in _state().items()}
    path = _save(_payload(state=state), tmp_path / f"{dtype}.pt")
    ckpt = load_checkpoint(path)
    for k, v in state.items():
        assert ckpt.weights[k].dtype == np.float32
        np.testing.assert_array_equal(ckpt.weights[k], v.float().numpy())


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_wrapper_prefix_is_stripped(tmp_path, prefix):
    state = _state()
    path = _save({prefix + k: v for k, v in state.items()}, tmp_path / "dp.pt")
    _assert_same(load_checkpoint(path), state)


def test_metadata_tensors_and_plain_containers(tmp_path):
    torch = _torch()
    extra = {
        "history": [1.0, 2.5, {"nested": (1, "two", None, True)}],
        "blob": b"\x00\xffraw",
        "tags": {"a", "b"},
        "size": torch.Size([3, 4]),
        "ints": torch.arange(5),
        "mask": torch.tensor([True, False]),
        "half": torch.tensor([0.5, 2.0], dtype=torch.float16),
        "bf": torch.tensor([1.5], dtype=torch.bfloat16),
        "scalar": torch.tensor(3.0),
        "z": complex(1, 2),
    }
    ckpt = load_checkpoint(_save(_payload(**extra), tmp_path / "meta.pt"))
    md = ckpt.metadata
    assert md["history"] == [1.0, 2.5, {"nested": (1, "two", None, True)}]
    assert md["blob"] == b"\x00\xffraw"
    assert md["tags"] == {"a", "b"}
    assert md["size"] == (3, 4)
    np.testing.assert_array_equal(md["ints"], np.arange(5))
    assert md["ints"].dtype == np.int64
    np.testing.assert_array_equal(md["mask"], [True, False])
    assert md["half"].dtype == np.float16
    np.testing.assert_array_equal(md["half"], [0.5, 2.0])
    assert md["bf"].dtype == np.float32 and md["bf"][0] == 1.5
    assert md["scalar"].shape == () and float(md["scalar"]) == 3.0
    assert md["z"] == 1 + 2j


def test_shared_substructures_do_not_blow_up(tmp_path):
    node: list = []
    for _ in range(60):  # 2**60 paths if expanded naively
        node = [node, node]
    ckpt = load_checkpoint(_save(_payload(tree=node), tmp_path / "dag.pt"))
    tree = ckpt.metadata["tree"]
    assert tree[0] is tree[1]


def test_recursive_payload_is_refused(tmp_path):
    loop: list = [1]
    loop.append(loop)
    _fails(_save(_payload(loop=loop), tmp_path / "loop.pt"), "recursive")


def test_checkpoint_is_hashable_by_identity(tmp_path):
    path = _save(_payload(), tmp_path / "h.pt")
    a, b = load_checkpoint(path), load_checkpoint(path)
    assert a == a and a != b and len({a, b}) == 2
    with pytest.raises(AttributeError):
        a.config = MSRNetConfig()  # frozen


def test_pathlike_and_str_accepted(tmp_path):
    path = _save(_payload(), tmp_path / "p.pt")
    assert load_checkpoint(str(path)).config == load_checkpoint(path).config == SMALL


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


# --------------------------------------------------------------------------
# nothing is ever executed


class _SystemCall:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Eval:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


class _Popen:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.target)],))


@pytest.mark.parametrize("attack, global_name", [
    (_SystemCall, "system"), (_Eval, "builtins.eval"), (_Popen, "subprocess.Popen"),
])
@pytest.mark.parametrize("where", ["metadata", "state_dict", "top"])
def test_foreign_globals_are_refused_not_executed(tmp_path, attack, global_name, where):
    target = tmp_path / "pwned"
    evil = attack(target)
    if where == "metadata":
        obj = _payload(extra=evil)
    elif where == "state_dict":
        state = _state()
        state["f3.bias"] = evil
        obj = _payload(state=state)
    else:
        obj = evil
    path = _save(obj, tmp_path / "evil.pt")
    assert zipfile.is_zipfile(path)
    msg = _fails(path, "forbidden global", global_name)
    assert "nothing was executed" in msg
    assert not target.exists()


def test_crafted_attack_really_is_live(tmp_path):
    """Sanity check of the test fixture: an unrestricted load DOES run the payload."""
    torch = _torch()
    target = tmp_path / "pwned"
    path = _save(_payload(extra=_SystemCall(target)), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not target.exists()
    torch.load(path, weights_only=False)  # the unsafe way
    assert target.exists()


def test_forbidden_global_without_torch(tmp_path):
    target = tmp_path / "pwned"
    data = pickle.dumps({"x": _SystemCall(target)}, protocol=4)  # STACK_GLOBAL opcode
    path = _crafted_zip(tmp_path / "evil.pt", data)
    _fails(path, "forbidden global", "system")
    assert not target.exists()


@pytest.mark.parametrize("module, name", [
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),  # real torch, not allowlisted
    ("collections", "OrderedDict.fromkeys"),  # dotted attribute of an allowed global
    ("numpy.core.multiarray", "_reconstruct"),
    ("copyreg", "_reconstructor"),
    ("torch", "load"),
])
def test_only_exact_allowlisted_globals(tmp_path, module, name):
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    path = _crafted_zip(tmp_path / "g.pt", data)
    _fails(path, f"forbidden global {module}.{name}")


def test_build_on_tensor_is_refused(tmp_path):
    data = _tensor_pickle((2, 3), (3, 1), state={"evil": 1})
    path = _crafted_zip(tmp_path / "b.pt", data, {"0": np.zeros(6, "<f4").tobytes()})
    _fails(path, "BUILD")


def test_import_does_not_pull_torch():
    code = ("import sys, msrnet_napari.checkpoint, msrnet_napari.weights; "
            "print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------
# crafted tensors: strides, offsets, storages, byte order (no torch needed)


def test_crafted_tensor_strided_view(tmp_path):
    data = _tensor_pickle((3, 2), (1, 3), offset=0)  # a transposed 2x3
    values = np.arange(6, dtype="<f4")
    path = _crafted_zip(tmp_path / "t.pt", data, {"0": values.tobytes()})
    x = _raw_payload(path)["x"]
    np.testing.assert_array_equal(x, values.reshape(2, 3).T)
    assert x.flags.c_contiguous and x.flags.writeable


def test_crafted_big_endian_storage(tmp_path):
    data = _tensor_pickle((2, 2), (2, 1), offset=1, numel=5)
    values = np.array([9, 1.5, -2, 3.25, 1e-3], dtype=">f4")
    path = _crafted_zip(tmp_path / "be.pt", data, {"0": values.tobytes()}, byteorder=b"big")
    x = _raw_payload(path)["x"]
    assert x.dtype == np.float32 and x.dtype.isnative
    np.testing.assert_array_equal(x, values[1:].astype("=f4").reshape(2, 2))


def test_crafted_missing_byteorder_means_little(tmp_path):
    data = _tensor_pickle((2,), (1,), numel=2)
    values = np.array([1.25, -4], dtype="<f4")
    path = _crafted_zip(tmp_path / "nb.pt", data, {"0": values.tobytes()}, byteorder=None)
    np.testing.assert_array_equal(_raw_payload(path)["x"], values)


def test_crafted_bad_byteorder(tmp_path):
    path = _crafted_zip(tmp_path / "bo.pt", _tensor_pickle((6,), (1,)),
                        {"0": bytes(24)}, byteorder=b"middle")
    _fails(path, "byteorder")


@pytest.mark.parametrize("size, stride, offset, numel", [
    ((2, 3), (3, 1), 1, 6),  # offset pushes the last element out
    ((2, 3), (4, 1), 0, 6),  # stride too large
    ((7,), (1,), 0, 6),  # more elements than the storage
    ((), (), 6, 6),  # scalar past the end
    ((2, 2), (1000000, 1), 0, 6),
    ((1 << 20, 1 << 20), (0, 0), 0, 6),  # zero strides inflating a tiny storage
])
def test_crafted_out_of_bounds_views_are_refused(tmp_path, size, stride, offset, numel):
    data = _tensor_pickle(size, stride, offset=offset, numel=numel)
    path = _crafted_zip(tmp_path / "oob.pt", data, {"0": bytes(4 * numel)})
    _fails(path, "malformed tensor" if (1 << 20) not in size else "too large")


@pytest.mark.parametrize("size, stride, offset", [
    ((2, 3), (3, -1), 0), ((-1,), (1,), 0), ((2,), (1,), -1), ((2,), (1.0,), 0),
    ((2, 3), (1,), 0), ("ab", (1, 1), 0),
])
def test_crafted_invalid_geometry_is_refused(tmp_path, size, stride, offset):
    tensor = _Ref(operator.add, (_PersistentStorage("0", 6), offset, size, stride, False,
                                 OrderedDict()))
    path = _crafted_zip(tmp_path / "geo.pt", _pickle({"x": tensor}, _REBUILD),
                        {"0": bytes(24)})
    _fails(path, "malformed tensor")


def test_crafted_many_zero_stride_views_hit_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(ckmod, "REBUILD_SLACK_BYTES", 1 << 20)
    views = [_Ref(operator.add, (_PersistentStorage("0", 1), 0, (1 << 16,), (0,), False,
                                 OrderedDict())) for _ in range(5)]  # 256 kB each from 4 B
    path = _crafted_zip(tmp_path / "zs.pt", _pickle({"x": views[:3]}, _REBUILD),
                        {"0": bytes(4)})
    assert [v.shape for v in _raw_payload(path)["x"]] == [(1 << 16,)] * 3
    path = _crafted_zip(tmp_path / "zs2.pt", _pickle({"x": views}, _REBUILD),
                        {"0": bytes(4)})
    _fails(path, "exceed")


def test_crafted_truncated_storage(tmp_path):
    path = _crafted_zip(tmp_path / "ts.pt", _tensor_pickle((2, 3), (3, 1)),
                        {"0": bytes(4 * 5)})  # 5 floats instead of 6
    _fails(path, "storage '0' is truncated", "20 bytes", "expected 24")


def test_crafted_missing_storage(tmp_path):
    path = _crafted_zip(tmp_path / "ms.pt", _tensor_pickle((2, 3), (3, 1)), {})
    _fails(path, "storage '0' is missing")


@pytest.mark.parametrize("key", ["../0", "a/b", "", 5])
def test_crafted_bad_storage_key(tmp_path, key):
    path = _crafted_zip(tmp_path / "k.pt", _tensor_pickle((6,), (1,), key=key),
                        {"0": bytes(24)})
    _fails(path, "storage key")


def test_crafted_bad_persistent_id(tmp_path):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "os", "system") if obj == "x" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(["x"])
    _fails(_crafted_zip(tmp_path / "pid.pt", buf.getvalue()), "persistent id")


def test_crafted_archive_name_is_free(tmp_path):
    values = np.arange(6, dtype="<f4")
    path = _crafted_zip(tmp_path / "n.pt", _tensor_pickle((6,), (1,)),
                        {"0": values.tobytes()}, archive="whatever_name")
    np.testing.assert_array_equal(_raw_payload(path)["x"], values)


def test_pickle_size_limit(tmp_path, monkeypatch):
    path = _crafted_zip(tmp_path / "big.pt", pickle.dumps(list(range(1000)), protocol=2))
    monkeypatch.setattr(ckmod, "MAX_PICKLE_BYTES", 100)
    _fails(path, "too large")


# --------------------------------------------------------------------------
# broken files


def test_truncated_zip_at_many_points(tmp_path):
    good = _save(_payload(), tmp_path / "good.pt").read_bytes()
    assert len(good) > 1000
    cuts = sorted({0, 1, 2, 4, 30, 100, len(good) // 3, len(good) // 2, len(good) - 200,
                   len(good) - 23, len(good) - 22, len(good) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value), cut
        if cut == 0:
            assert "empty" in str(info.value)


def test_corrupted_storage_bytes_fail_crc(tmp_path):
    path = _save(_payload(), tmp_path / "crc.pt")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/data/0"))
        info = zf.getinfo(name)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                  info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the local header's lengths
    raw[start + 4] ^= 0xFF  # flip bits inside the first storage
    path.write_bytes(bytes(raw))
    _fails(path, "corrupt")


@pytest.mark.parametrize("content, fragment", [
    (b"\x00" * 1000, "not a zip"),
    (b"hello, this is a text file\n", "not a zip"),
    (os.urandom(4096).replace(b"PK", b"pk").replace(b"\x80", b"\x81") + b"x", "not a zip"),
    (b"", "empty"),
])
def test_garbage_files(tmp_path, content, fragment):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    msg = _fails(path, fragment)
    assert "torch>=1.6" in msg or fragment == "empty"


def test_legacy_non_zip_torch_format(tmp_path):
    torch = _torch()
    path = tmp_path / "legacy.pt"
    torch.save(_payload(), path, _use_new_zipfile_serialization=False)
    _fails(path, "legacy/non-zip format not supported, re-save with torch>=1.6")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    _fails(path, "data.pkl")


def test_npz_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.zeros(3))
    _fails(path, "data.pkl")


def test_torchscript_archive_is_refused(tmp_path):
    torch = _torch()
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    _fails(path, "TorchScript")


@pytest.mark.parametrize("garbage", [
    b"\x80\x02}q\x00(X\x01",  # cut in the middle
    b"not a pickle at all",
    b"\x80\x02K\x01K\x02s.",  # SETITEM on an int
    b"\x80\x02Q.",  # persistent load with an empty stack
])
def test_corrupt_pickle(tmp_path, garbage):
    _fails(_crafted_zip(tmp_path / "cp.pt", garbage), "corrupt pickle")


@pytest.mark.parametrize("data, fragment", [
    (b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"abc.", "corrupt pickle"),
    (b"\x80\x05\x96" + struct.pack("<Q", 3) + b"abc.", "unsupported pickle opcode BYTEARRAY8"),
    (b"\x80\x05\x97.", "unsupported pickle opcode NEXT_BUFFER"),
    (b"\x80\x02X" + struct.pack("<I", 1 << 31) + b"abc.", "corrupt pickle"),
])
def test_corrupt_or_exotic_opcodes(tmp_path, data, fragment):
    _fails(_crafted_zip(tmp_path / "op.pt", data), fragment)


def test_non_dict_payload(tmp_path):
    _fails(_save([1, 2, 3], tmp_path / "list.pt"), "payload is a list")


def test_dict_without_state_dict(tmp_path):
    _fails(_save({"epoch": 1, "lr": 0.1}, tmp_path / "nosd.pt"), "no state_dict found")


# --------------------------------------------------------------------------
# validation of content


def test_missing_key(tmp_path):
    state = _state()
    del state["f2.convs.1.bias"]
    _fails(_save(_payload(state=state), tmp_path / "mk.pt"), "missing keys",
           "f2.convs.1.bias")


def test_wrong_shape(tmp_path):
    torch = _torch()
    state = _state()
    state["f2.fuse.weight"] = torch.zeros(3, 23, 1, 1)
    _fails(_save(_payload(state=state), tmp_path / "ws.pt"), "f2.fuse.weight",
           "(3, 23, 1, 1)", "expected (3, 24, 1, 1)")


def test_extra_key(tmp_path):
    torch = _torch()
    state = _state()
    state["f4.weight"] = torch.zeros(3)
    state["f2.convs.3.weight"] = torch.zeros(8, 8, 3, 3)
    msg = _fails(_save(_payload(state=state), tmp_path / "ek.pt"), "unexpected keys")
    assert "f4.weight" in msg and "f2.convs.3.weight" in msg


def test_partial_module_prefix_is_not_stripped(tmp_path):
    state = _state()
    state = {("module." + k if k.startswith("f1") else k): v for k, v in state.items()}
    _fails(_save(_payload(state=state), tmp_path / "pp.pt"), "missing keys",
           "module.f1.fuse.weight")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight(tmp_path, bad):
    state = _state()
    state["f2.convs.0.weight"][1, 2, 0, 0] = bad
    state["f3.bias"][0] = bad
    msg = _fails(_save(_payload(state=state), tmp_path / "nan.pt"), "non-finite")
    assert "f2.convs.0.weight" in msg  # the first offending entry is named


def test_integer_weight_refused(tmp_path):
    state = _state()
    state["f3.bias"] = state["f3.bias"].long()
    _fails(_save(_payload(state=state), tmp_path / "int.pt"), "f3.bias", "int64")


def test_non_tensor_weight_refused(tmp_path):
    state = _state()
    state["f3.bias"] = [0.0, 0.0, 0.0]
    _fails(_save(_payload(state=state), tmp_path / "list.pt"), "f3.bias", "not a tensor")


@pytest.mark.parametrize("config, fragment", [
    ({"depth": 0, "width": 8, "f1_width": 4}, "depth must be a positive integer"),
    ({"depth": 3, "width": 8, "f1_width": 4, "colour": 1}, "unknown MSR-net config keys"),
    ({"log_bases": [1.0, -2.0]}, "log_bases"),
    ({"log_bases": 5}, "bad config"),
    ("depth=3", "config is a str"),
    ({"depth": 10**12, "width": 8, "f1_width": 4}, "depth must be at most 64"),
])
def test_bad_config(tmp_path, config, fragment):
    payload = _payload()
    payload["config"] = config
    _fails(_save(payload, tmp_path / "bc.pt"), fragment)


def test_config_mismatching_state_dict(tmp_path):
    payload = _payload(state=_state(SMALL))
    payload["config"] = MSRNetConfig(depth=3, width=9, f1_width=4).to_dict()
    _fails(_save(payload, tmp_path / "mm.pt"), "f2.convs.0.weight", "expected (9, 3, 3, 3)")


@pytest.mark.parametrize("fmt, version, fragment", [
    ("msrnet-napari", 2, "newer"),
    ("msrnet-napari", "1", "bad checkpoint version"),
    ("msrnet-napari", None, "bad checkpoint version"),
    ("something-else", 1, "unknown checkpoint format"),
])
def test_format_and_version(tmp_path, fmt, version, fragment):
    payload = _payload()
    payload["format"], payload["version"] = fmt, version
    _fails(_save(payload, tmp_path / "fv.pt"), fragment)


def test_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)
