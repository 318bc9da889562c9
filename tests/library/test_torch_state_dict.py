"""Legacy PyTorch state dicts read without torch: every storage type, strides, refused globals, damaged files."""

import collections
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from library.torch_state_dict import MAGIC_NUMBER, PROTOCOL_VERSION, STORAGE_DTYPES, UnreadableStateDict, read_state_dict

SYSTEM = {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class FakeStorage:
    """What torch.save pickles by persistent id: a typed storage and its values."""

    def __init__(self, values, type_name):
        self.values, self.type_name = values, type_name


class FakeTensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage, offset, shape, strides):
        self.arguments = (storage, offset, shape, strides, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.arguments


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named torch and torch._utils, so that pickle writes the globals a real state dict holds."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in STORAGE_DTYPES:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def rebuild(*arguments):
        return arguments

    rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = rebuild
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy(path, state, first=MAGIC_NUMBER):
    """Write ``state`` (name -> FakeTensor or anything picklable) in torch's legacy format."""
    storages = collections.OrderedDict()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, FakeStorage):
                return None
            key = str(id(obj))
            storages[key] = obj
            return ("storage", getattr(sys.modules["torch"], obj.type_name), key, "cpu", obj.values.size)

    with open(path, "wb") as handle:
        for header in (first, PROTOCOL_VERSION, SYSTEM):
            pickle.dump(header, handle, protocol=2)
        Pickler(handle, protocol=2).dump(collections.OrderedDict(state))
        pickle.dump(list(storages), handle, protocol=2)
        for storage in storages.values():
            handle.write(struct.pack("<q", storage.values.size) + storage.values.tobytes())


def contiguous(array, type_name):
    """A tensor over a storage of its own, laid out row-major."""
    strides = [stride // array.itemsize for stride in np.ascontiguousarray(array).strides]
    return FakeTensor(FakeStorage(np.ascontiguousarray(array).ravel(), type_name), 0, array.shape, strides)


def test_every_storage_type_reads_back_exactly(fake_torch, tmp_path):
    rng = np.random.RandomState(0)
    arrays = {name: (rng.uniform(-100, 100, [2, 3]) if dtype in ("<f4", "<f8", "<f2") else
                     rng.randint(0, 2, [2, 3]) if dtype == "?" else rng.randint(-100, 100, [2, 3])).astype(dtype)
              for name, dtype in STORAGE_DTYPES.items() if dtype not in ("u1",)}
    arrays["ByteStorage"] = rng.randint(0, 255, [2, 3]).astype("u1")
    path = tmp_path / "all.pth"
    write_legacy(path, {name: contiguous(array, name) for name, array in arrays.items()})
    loaded = read_state_dict(str(path))
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == (2, 3), name
        np.testing.assert_array_equal(loaded[name], array)


def test_strided_views_offsets_shared_storages_and_scalars_keep_their_values(fake_torch, tmp_path):
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(4, 5, 3, 2)  # stored as TensorFlow lays out kernels
    shared = FakeStorage(kernel.ravel(), "FloatStorage")
    path = tmp_path / "views.pth"
    write_legacy(path, {
        "conv.weight": FakeTensor(shared, 0, (2, 3, 4, 5), (1, 2, 30, 6)),  # the [out, in, h, w] view torch gives
        "tail": FakeTensor(shared, 100, (20,), (1,)),
        "steps": FakeTensor(FakeStorage(np.array([7], np.int64), "LongStorage"), 0, (), ()),
    })
    loaded = read_state_dict(str(path))
    np.testing.assert_array_equal(loaded["conv.weight"], kernel.transpose(3, 2, 0, 1))
    assert loaded["conv.weight"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded["tail"], np.arange(100, 120, dtype=np.float32))
    assert loaded["steps"].shape == () and loaded["steps"] == 7


class RunsACommand:
    """What a malicious file holds: a call of os.system when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["state dict", "first pickle"])
def test_a_global_outside_the_state_dict_types_is_refused_before_it_runs(fake_torch, tmp_path, where):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    payload = RunsACommand(marker)
    if where == "state dict":
        write_legacy(path, {"weight": payload})
    else:
        write_legacy(path, {}, first=payload)
    with pytest.raises(UnreadableStateDict) as error:
        read_state_dict(str(path))
    assert str(error.value) == (f"{path}: refused to load global {os.system.__module__}.system: a state dict needs none "
                                "(the file may run code when unpickled; do not load it with torch either)")
    assert not marker.exists()


def test_a_truncated_file_is_one_line_naming_it(fake_torch, tmp_path):
    path = tmp_path / "whole.pth"
    write_legacy(path, {"weight": contiguous(np.ones([64, 64], np.float32), "FloatStorage")})
    whole = path.read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(UnreadableStateDict) as error:
            read_state_dict(str(path))
        message = str(error.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, cut
        assert "truncated" in message, (cut, message)


def test_a_zip_format_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "new.pth"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UnreadableStateDict, match=r"new.pth: not a legacy PyTorch state dict, or truncated"):
        read_state_dict(str(path))


def test_the_pinned_efficientnet_lite0_file_holds_247_arrays_besides_pytorchs_counters():
    from project.networks.efficientnet_lite0 import WEIGHTS

    state = read_state_dict(WEIGHTS.path)
    arrays = {name: value for name, value in state.items() if not name.endswith("num_batches_tracked")}
    assert len(state) == 296 and len(arrays) == 247
    assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3) and arrays["_fc.weight"].shape == (1000, 1280)
    assert all(value.dtype == np.float32 for value in arrays.values())
