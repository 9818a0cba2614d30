"""Reading PyTorch `.pth` state dicts without torch and without trusting pickle.

Both layouts `torch.save` writes are read directly: the zip archive (torch
>= 1.6: `<name>/data.pkl` plus one raw file per storage) and the legacy
stream (magic number, protocol, system info, the pickle, the storage keys,
then the raw storages). The pickle goes through an unpickler that resolves
only what a state dict needs (`OrderedDict`, the tensor rebuild functions and
the typed storage classes), each to a NumPy stand-in defined here; any other
global raises `ValueError`, so nothing in the file is ever executed.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for `torch.<X>Storage` while unpickling."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def decode(self, raw):
        if self.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    array = storage() if callable(storage) else storage
    itemsize = array.dtype.itemsize
    if not size:
        return np.array(array[storage_offset])
    view = np.lib.stride_tricks.as_strided(
        array[storage_offset:],
        shape=tuple(size),
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage=None, allowed=None):
        super().__init__(file)
        self._load_storage = load_storage
        self._allowed = allowed or _ALLOWED

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise ValueError(
                f"Refusing to load {module}.{name}: a state dict holds only tensors. "
                f"Received: global={module}.{name}"
            )
        return self._allowed[(module, name)]

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise ValueError(f"Unsupported persistent id in state dict. Received: pid={pid!r}")
        if self._load_storage is None:
            raise ValueError("Unexpected storage reference outside the state dict pickle.")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"Unsupported storage type. Received: storage={storage_type!r}")
        view = pid[5] if len(pid) > 5 else None
        return self._load_storage(storage_type, key, view)


def _check_state_dict(obj, path):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(
            f"{path!r} does not hold a state dict of tensors. Received: weights={path}"
        )
    return collections.OrderedDict((str(k), v) for k, v in obj.items())


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is not a PyTorch zip archive. Received: weights={path}")
        root = pickles[0][: -len("data.pkl")]
        cache = {}

        def load_storage(storage_type, key, view):
            if key not in cache:
                raw = archive.read(f"{root}data/{key}")
                cache[key] = storage_type.decode(raw)
            return cache[key]

        data = archive.read(pickles[0])
        return _RestrictedUnpickler(io.BytesIO(data), load_storage).load()


class _Deferred:
    """A tensor whose storage is read after the pickle (legacy layout)."""

    def __init__(self, args):
        self.args = args

    def resolve(self):
        storage, *rest = self.args
        return _rebuild_tensor(storage(), *rest)


_DEFERRED = {
    **_ALLOWED,
    ("torch._utils", "_rebuild_tensor"): lambda *a: _Deferred(a),
    ("torch._utils", "_rebuild_tensor_v2"): lambda *a: _Deferred(a),
}


def _load_legacy(path):
    with open(path, "rb") as f:
        if _RestrictedUnpickler(f).load() != LEGACY_MAGIC:
            raise ValueError(f"{path!r} is not a PyTorch file. Received: weights={path}")
        _RestrictedUnpickler(f).load()  # protocol version
        _RestrictedUnpickler(f).load()  # system info
        storages = {}

        def load_storage(storage_type, key, view):
            storages.setdefault(key, [storage_type, None])
            if view is not None:
                _, offset, size = view
                return lambda: storages[key][1][offset : offset + size]
            return lambda: storages[key][1]

        obj = _RestrictedUnpickler(f, load_storage, _DEFERRED).load()
        for key in _RestrictedUnpickler(f).load():
            storage_type = storages[str(key)][0]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * storage_type.itemsize)
            if len(raw) != numel * storage_type.itemsize:
                raise ValueError(f"{path!r} is truncated. Received: weights={path}")
            storages[str(key)][1] = storage_type.decode(raw)
    if isinstance(obj, dict):
        return collections.OrderedDict(
            (k, v.resolve() if isinstance(v, _Deferred) else v) for k, v in obj.items()
        )
    return obj


def load_state_dict(path):
    """Reads a `.pth` state dict as `{name: numpy array}`, without torch.

    Raises:
        ValueError: the file is not a PyTorch state dict, is truncated, or its
            pickle refers to anything but tensors (nothing is executed).
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            obj = _load_legacy(path)
    except ValueError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path!r} is not a readable PyTorch state dict ({type(exc).__name__}: {exc}). "
            f"Received: weights={path}"
        ) from None
    return _check_state_dict(obj, path)
