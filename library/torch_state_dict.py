"""Read a PyTorch state dict saved in the legacy (pre-1.6, not zip) format, without torch and without running its code.

The legacy format is five pickles and the raw storages: a magic number, a protocol version,
system information, the state dict itself (each tensor a call of
``torch._utils._rebuild_tensor_v2`` over a storage named by a persistent id), the list of
storage keys, then each storage as an 8-byte little-endian element count and its raw bytes.

A pickle can call any importable function while it loads (``os.system`` included), so the
state dict is read by an unpickler that resolves only the globals such a file needs (an
ordered dict, the tensor rebuild function, the storage types) and refuses every other one
before anything runs. Tensors come back as numpy arrays of their PyTorch shape.
"""

import collections
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {  # torch.<name>Storage -> element type (little-endian, as the file's sys-info pickle says)
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}
REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")


class UnreadableStateDict(ValueError):
    """A file that is not a legacy PyTorch state dict this reader accepts; the message is one line."""


class _Storage:
    """A storage named by the state dict, filled once the raw bytes behind the pickles are read."""

    def __init__(self, dtype: str, size: int):
        self.dtype, self.size = np.dtype(dtype), size
        self.values = None


class _Tensor:
    """A tensor waiting for its storage: offset, shape and strides in elements, as torch records them."""

    def __init__(self, storage, offset, shape, strides, *_):
        self.storage, self.offset, self.shape, self.strides = storage, offset, tuple(shape), tuple(strides)

    def array(self) -> np.ndarray:
        """A copy of the tensor, laid out in numpy's row-major order whatever its strides."""
        values, itemsize = self.storage.values, self.storage.dtype.itemsize
        needed = self.offset + 1 + sum((extent - 1) * stride for extent, stride in zip(self.shape, self.strides))
        if min(self.shape, default=1) > 0 and needed > len(values):
            raise UnreadableStateDict(f"a tensor of shape {list(self.shape)} reaches past its storage of {len(values)} elements")
        view = np.lib.stride_tricks.as_strided(
            values[self.offset:], self.shape, [stride * itemsize for stride in self.strides], writeable=False)
        return np.array(view, order="C")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a state dict; storages come from persistent ids."""

    def __init__(self, handle, path, storages):
        super().__init__(handle)
        self.path, self.storages = path, storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == REBUILD_TENSOR:
            return _Tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise UnreadableStateDict(f"{self.path}: refused to load global {module}.{name}: a state dict needs none "
                                  "(the file may run code when unpickled; do not load it with torch either)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in STORAGE_DTYPES.values()):
            raise UnreadableStateDict(f"{self.path}: unexpected persistent id {pid!r:.80}")
        _, dtype, key, _location, size = pid[:5]
        return self.storages.setdefault(key, _Storage(dtype, size))


def read_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """The tensors of the legacy PyTorch file ``path`` by name, as numpy arrays; UnreadableStateDict if it is not one."""
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        if isinstance(error, UnreadableStateDict):
            raise
        raise UnreadableStateDict(f"{path}: not a legacy PyTorch state dict, or truncated "
                                  f"({type(error).__name__}: {' '.join(str(error).split())[:120]})") from None


def _read(handle, path):
    """The five pickles (each through the restricted unpickler), then the storages in the order the key list gives."""
    storages = {}

    def load():
        return _RestrictedUnpickler(handle, path, storages).load()

    if load() != MAGIC_NUMBER:
        raise UnreadableStateDict(f"{path}: no PyTorch magic number at the start (a zip-format or other file)")
    if load() != PROTOCOL_VERSION:
        raise UnreadableStateDict(f"{path}: unknown PyTorch protocol version")
    system = load()
    if not isinstance(system, dict) or not system.get("little_endian", False):
        raise UnreadableStateDict(f"{path}: written on a big-endian machine, which this reader does not support")
    state, keys = load(), load()
    if not isinstance(state, dict) or not all(isinstance(value, _Tensor) for value in state.values()):
        raise UnreadableStateDict(f"{path}: holds no state dict of tensors")
    for key in keys:
        storage = storages[key]
        (count,) = struct.unpack("<q", handle.read(8))
        raw = handle.read(count * storage.dtype.itemsize)
        if count != storage.size or len(raw) != count * storage.dtype.itemsize:
            raise UnreadableStateDict(f"{path}: storage {key} is truncated or has the wrong size")
        storage.values = np.frombuffer(raw, storage.dtype)
    if any(storage.values is None for storage in storages.values()):
        raise UnreadableStateDict(f"{path}: a tensor's storage is missing from the file")
    return collections.OrderedDict((name, tensor.array()) for name, tensor in state.items())
