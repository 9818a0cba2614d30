"""Reading PyTorch `.pth` state dicts without torch and without trusting the file.

Both layouts `torch.save` writes are read directly: the zip archive (torch
>= 1.6: `<name>/data.pkl` plus one raw file per storage) and the legacy
stream (magic number, protocol, system info, the pickle, the storage keys,
then the raw storages).

A `.pth` file may come from anyone, so nothing in it is trusted:

- Before the unpickler sees a pickle, a scan checks its opcodes: only those
  `torch.save` writes are accepted, tuples nest shallowly (hashing a deeply
  nested tuple overflows the C stack) and the memo grows one entry at a time.
- The unpickler resolves only what a state dict needs (`OrderedDict`, the
  tensor rebuild functions, the typed storage classes), each to an immutable
  token defined here, so no file can change how the next one is read; any
  other global is refused and nothing in the file is ever executed.
- Tensors are built after the pickle, once their state-dict keys are known:
  every size, stride and offset is checked against the storage it views, and
  only the bytes the storages declare are read.

Every problem is reported as a `ValueError` naming the file.
"""

import collections
import io
import math
import operator
import os
import pickle
import reprlib
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# A state dict's pickle holds names and shapes, never tensor data.
_MAX_PICKLE_BYTES = 64 << 20
# Bounds the objects a pickle makes, whatever its size: a state dict needs a
# few dozen opcodes per tensor.
_MAX_OPCODES = 1 << 22
# Real state dicts nest tuples a few levels deep.
_MAX_TUPLE_DEPTH = 32
# Tensors may hold more elements than their storages (an expanded tensor, two
# keys sharing a storage), up to this many bytes beyond what the file stores.
_REPEAT_ALLOWANCE = 1 << 30
_MAX_INDEX = 1 << 63  # sizes, strides and offsets are int64 in torch
_MAX_DIMS = 64

_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _Refused(Exception):
    """A problem with the file; `load_state_dict` adds its path."""


def _brief(obj):
    return reprlib.repr(obj)


class _Token:
    """Base of every object a pickle can reach: no `__dict__`, no settable slot.

    BUILD (`__setstate__`) on a token fails, so a file cannot alter the shared
    stand-ins that the next file is read with.
    """

    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is read-only")


class _StorageType(_Token):
    """Stands for `torch.<X>Storage`."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name):
        dtype = _STORAGE_DTYPES[name]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        super().__init__(name=name, dtype=dtype, itemsize=itemsize)

    def __repr__(self):
        return f"torch.{self.name}"

    def decode(self, raw):
        if self.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(raw, dtype=self.dtype)


class _Function(_Token):
    """Stands for a torch function the pickle calls (REDUCE)."""

    __slots__ = ("fn",)

    def __call__(self, *args):
        return self.fn(*args)


class _Record(tuple):
    """Base of what the pickle makes as it is read: immutable and unhashable.

    Hashing a record would recurse into whatever the file put in it.
    """

    __slots__ = ()
    __hash__ = None
    __setattr__ = _Token.__setattr__
    __delattr__ = _Token.__delattr__


class _StorageRef(_Record):
    """A persistent id: (storage_type, key, numel, view), all as the file says."""

    __slots__ = ()


class _Tensor(_Record):
    """A tensor as the pickle describes it: (storage, offset, size, stride).

    Read and checked after the pickle, once its state-dict key is known.
    """

    __slots__ = ()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    # v2 adds requires_grad, the backward-hooks OrderedDict and metadata.
    return _Tensor((storage, storage_offset, size, stride))


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Function(fn=_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Function(fn=_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(fn=_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


# -- the opcode scan -----------------------------------------------------------------------

# The scan's view of each opcode torch.save writes (protocol 2, or 4 when
# asked): what it does to the stack, and its length with any fixed-size
# argument. Any other opcode is refused.
(_PUT4, _LEAF, _GET1, _SIZED, _MARK, _TUPLE, _REDUCE, _TUPLE0, _TUPLE1, _PERSID, _SETITEM,
 _PUT1, _GET4, _TUPLE2, _TUPLE3, _POP, _AT_MARK, _EXTEND, _MEMOIZE, _GLOBAL, _STACK_GLOBAL,
 _NOP, _STOP) = range(1, 24)  # most frequent first
_KINDS, _LENGTHS = [0] * 256, [0] * 256
for _names, _kind, _length in [
    ("NEWFALSE NEWTRUE NONE EMPTY_DICT EMPTY_LIST", _LEAF, 1),
    ("BININT1", _LEAF, 2), ("BININT2", _LEAF, 3), ("BININT", _LEAF, 5), ("BINFLOAT", _LEAF, 9),
    ("BINPUT", _PUT1, 2), ("LONG_BINPUT", _PUT4, 5), ("MEMOIZE", _MEMOIZE, 1),
    ("BINGET", _GET1, 2), ("LONG_BINGET", _GET4, 5), ("MARK", _MARK, 1),
    ("EMPTY_TUPLE", _TUPLE0, 1), ("TUPLE1", _TUPLE1, 1), ("TUPLE2", _TUPLE2, 1),
    ("TUPLE3", _TUPLE3, 1), ("TUPLE", _TUPLE, 1), ("REDUCE", _REDUCE, 1),
    ("BINPERSID", _PERSID, 1), ("APPEND BUILD", _POP, 1), ("LIST DICT", _AT_MARK, 1),
    ("SETITEM", _SETITEM, 1), ("APPENDS SETITEMS", _EXTEND, 1), ("GLOBAL", _GLOBAL, 1),
    ("STACK_GLOBAL", _STACK_GLOBAL, 1), ("PROTO", _NOP, 2), ("FRAME", _NOP, 9),
    ("STOP", _STOP, 1),
    # Length-prefixed: the length here is that of the prefix.
    ("SHORT_BINUNICODE SHORT_BINSTRING SHORT_BINBYTES LONG1", _SIZED, 1),
    ("BINUNICODE BINSTRING BINBYTES", _SIZED, 4), ("BINUNICODE8", _SIZED, 8),
]:
    for _name in _names.split():
        _KINDS[getattr(pickle, _name)[0]] = _kind
        _LENGTHS[getattr(pickle, _name)[0]] = _length
_U32 = struct.Struct("<I").unpack_from


def _scan(data, pos, limit=None):
    """Checks the pickle of at most `limit` bytes at `data[pos]`; returns where it ends.

    Follows the stack only as far as safety needs: how deeply each item nests
    tuples (the C unpickler hashes dict keys recursively, with no depth limit)
    and how the memo grows (it allocates up to the largest index it is given).
    """
    limit = _MAX_PICKLE_BYTES if limit is None else limit
    end = min(len(data), pos + limit)
    kinds, lengths, u32 = _KINDS, _LENGTHS, _U32
    depth = []  # per stack item: how deeply it nests tuples
    marks, memo = [], []
    push, pop = depth.append, depth.pop
    for _ in range(_MAX_OPCODES):
        if pos >= end:
            raise _Refused("The pickle is truncated or larger than a state dict's.")
        op = data[pos]
        kind = kinds[op]
        if kind == _PUT4 or kind == _PUT1:
            index = u32(data, pos + 1)[0] if kind == _PUT4 else data[pos + 1]
            if index == len(memo):
                memo.append(depth[-1])
            elif index < len(memo):
                memo[index] = depth[-1]
            else:
                raise _Refused(f"The pickle's memo skips to index {index}.")
        elif kind == _LEAF:
            push(0)
        elif kind == _GET1 or kind == _GET4:
            push(memo[data[pos + 1] if kind == _GET1 else u32(data, pos + 1)[0]])
        elif kind == _SIZED:
            size = lengths[op]
            pos += 1 + size + int.from_bytes(data[pos + 1:pos + 1 + size], "little")
            push(0)
            continue
        elif kind == _MARK:
            marks.append(len(depth))
        elif kind == _TUPLE:
            start = marks.pop()
            nested = max(depth[start:], default=0) + 1
            del depth[start:]
            push(nested)
            if nested > _MAX_TUPLE_DEPTH:
                break
        elif kind == _REDUCE:
            # The result may be one of the arguments (`_rebuild_parameter`).
            depth[-1] = pop()
        elif kind == _TUPLE0:
            push(1)
        elif kind == _TUPLE1:
            depth[-1] += 1
            if depth[-1] > _MAX_TUPLE_DEPTH:
                break
        elif kind == _PERSID:
            depth[-1] = 0
        elif kind == _SETITEM:
            del depth[-2:]
        elif kind == _TUPLE2 or kind == _TUPLE3:
            depth[-1] = max(pop(), depth[-1] if kind == _TUPLE2 else max(pop(), depth[-1])) + 1
            if depth[-1] > _MAX_TUPLE_DEPTH:
                break
        elif kind == _POP:
            pop()
        elif kind == _AT_MARK:
            del depth[marks.pop():]
            push(0)
        elif kind == _EXTEND:
            del depth[marks.pop():]
        elif kind == _MEMOIZE:
            memo.append(depth[-1])
        elif kind == _GLOBAL:
            pos = data.index(b"\n", data.index(b"\n", pos, end) + 1, end)
            push(0)
        elif kind == _STACK_GLOBAL:
            pop()
            depth[-1] = 0
        elif kind == _STOP:
            return pos + 1
        elif kind != _NOP:
            raise _Refused(f"Pickle opcode {bytes([op])!r} at byte {pos} is not one "
                           "torch.save writes.")
        pos += lengths[op]
    else:
        raise _Refused("The pickle makes more objects than a state dict needs.")
    raise _Refused(f"The pickle nests tuples more than {_MAX_TUPLE_DEPTH} deep.")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, refs=None):
        super().__init__(file)
        self._refs = refs

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"Refusing to load {module}.{name}: a state dict holds only "
                           "tensors.")
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if (self._refs is None or type(pid) is not tuple or len(pid) < 5
                or pid[0] not in ("storage", b"storage")):
            raise _Refused(f"Unsupported persistent id {_brief(pid)}.")
        ref = _StorageRef((pid[1], pid[2], pid[4], pid[5] if len(pid) > 5 else None))
        self._refs.append(ref)
        return ref


def _unpickle(data, pos=0, refs=None):
    """The object pickled at `data[pos]` and where its pickle ends."""
    end = _scan(data, pos)
    return _Unpickler(io.BytesIO(data[pos:end]), refs).load(), end


# -- from pickle to arrays -----------------------------------------------------------------


def _state_dict_items(obj):
    """The (key, _Tensor) pairs of the unpickled object, read without calling its methods."""
    dicts = (dict, collections.OrderedDict)
    if type(obj) in dicts and type(dict.get(obj, "state_dict")) in dicts:
        obj = dict.get(obj, "state_dict")
    if type(obj) not in dicts:
        raise _Refused("It does not hold a state dict of tensors.")
    items = list(dict.items(obj))
    for key, value in items:
        if type(key) is not str:
            raise _Refused(f"State dict key {_brief(key)} is not a string.")
        if type(value) is not _Tensor:
            raise _Refused(f"State dict entry {key!r} is not a tensor.")
    return items


def _is_index(value):
    return type(value) is int and 0 <= value < _MAX_INDEX


def _are_indices(values):
    return (set(map(type, values)) == {int} and min(values) >= 0
            and max(values) < _MAX_INDEX)


class _Storages:
    """Reads each storage once, through `read(storage_type, key, numel)`."""

    def __init__(self, read):
        self._read = read
        self._arrays = {}
        self._stored = 0
        self._made = 0

    def _storage(self, ref):
        storage_type, key, numel, view = ref
        if type(storage_type) is not _StorageType:
            raise _Refused(f"Its storage type {_brief(storage_type)} is not a torch storage.")
        if type(key) is not str or not _is_index(numel):
            raise _Refused(f"Its storage reference ({_brief(key)}, {_brief(numel)} elements) "
                           "is malformed.")
        if key in self._arrays:
            known_type, known_numel, array = self._arrays[key]
            if known_type is not storage_type or known_numel != numel:
                raise _Refused(f"Storage {key!r} is declared as {known_numel} {known_type} and "
                               f"as {numel} {storage_type} elements.")
        else:
            array = self._read(storage_type, key, numel)
            self._stored += array.nbytes
            self._arrays[key] = storage_type, numel, array
        if view is not None:  # legacy files from torch < 1.0 may slice a storage
            if not (type(view) is tuple and len(view) == 3 and _are_indices(view[1:])
                    and view[1] + view[2] <= array.size):
                raise _Refused(f"Its view {_brief(view)} of storage {key!r} "
                               f"({array.size} elements) is out of bounds.")
            array = array[view[1]:view[1] + view[2]]
        return array

    def tensor(self, tensor):
        """The array `tensor` describes, once it is known to lie within its storage."""
        ref, offset, size, stride = tensor
        if type(ref) is not _StorageRef:
            raise _Refused("Its storage is not a storage reference.")
        if not (type(size) in (tuple, list) and type(stride) in (tuple, list)
                and len(size) == len(stride) <= _MAX_DIMS
                and _are_indices((offset, *size, *stride))):
            raise _Refused(f"Its size {_brief(size)}, stride {_brief(stride)} or offset "
                           f"{_brief(offset)} is not made of non-negative int64 values.")
        array = self._storage(ref)
        numel = math.prod(size)
        if numel == 0:
            return np.empty(size, array.dtype)
        last = offset + sum(map(operator.mul, size, stride)) - sum(stride)
        if last >= array.size:
            raise _Refused(f"Size {tuple(size)}, stride {tuple(stride)} and offset {offset} "
                           f"reach element {last} of a storage of {array.size}.")
        self._made += numel * array.itemsize
        if self._made > self._stored + _REPEAT_ALLOWANCE:
            raise _Refused(f"Size {tuple(size)} repeats the stored elements into more bytes "
                           "than a state dict holds.")
        # numpy checks the extent against the buffer again.
        return np.ndarray(size, array.dtype, buffer=array, offset=offset * array.itemsize,
                          strides=tuple(map(array.itemsize.__mul__, stride))).copy()

    def state_dict(self, items):
        out = collections.OrderedDict()
        for key, tensor in items:
            try:
                out[key] = self.tensor(tensor)
            except _Refused as exc:
                raise _Refused(f"Tensor {key!r}: {exc}") from None
            except Exception as exc:  # numpy and zipfile raise many types on bad input
                raise _Refused(f"Tensor {key!r}: {type(exc).__name__}: "
                               f"{_brief(str(exc))}.") from None
        return out


# -- the two layouts -----------------------------------------------------------------------


def _read_entry(archive, info, size):
    """`size` bytes of zip entry `info`, inflating no more whatever its header says."""
    with archive.open(info) as f:
        raw = f.read(size)
    if len(raw) != size:
        raise _Refused(f"Entry {info.filename!r} is truncated.")
    return raw


def _load_zip(archive):
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise _Refused("It is not a PyTorch zip archive.")
    info = archive.getinfo(pickles[0])
    if info.file_size > _MAX_PICKLE_BYTES:
        raise _Refused(f"Its pickle ({info.file_size} bytes) is larger than a state dict's.")
    refs = []
    obj, _ = _unpickle(_read_entry(archive, info, info.file_size), refs=refs)
    root = pickles[0][: -len("data.pkl")]

    def read(storage_type, key, numel):
        name = f"{root}data/{key}"
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise _Refused(f"Storage {key!r} has no entry in the archive.") from None
        size = numel * storage_type.itemsize
        if info.file_size != size:
            raise _Refused(f"Entry {name!r} holds {info.file_size} bytes for {numel} "
                           f"{storage_type} elements ({size} bytes).")
        return storage_type.decode(_read_entry(archive, info, size))

    return _Storages(read).state_dict(_state_dict_items(obj))


def _load_legacy(data):
    magic, pos = _unpickle(data)
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise _Refused("It is not a PyTorch file.")
    _, pos = _unpickle(data, pos)  # protocol version
    _, pos = _unpickle(data, pos)  # system info
    refs = []
    obj, pos = _unpickle(data, pos, refs)
    keys, pos = _unpickle(data, pos)
    types = {}
    for storage_type, key, _, _ in refs:
        if type(key) is str and type(storage_type) is _StorageType:
            types.setdefault(key, storage_type)
    if type(keys) is not list:
        raise _Refused("Its storage key list is malformed.")
    stored = {}  # key -> (element count, byte offset in data)
    for key in keys:
        if type(key) is not str or key not in types:
            raise _Refused(f"Its storage key {_brief(key)} is not one its pickle uses.")
        if pos + 8 > len(data):
            raise _Refused("It is truncated.")
        (numel,) = struct.unpack_from("<q", data, pos)
        pos += 8
        left = len(data) - pos
        if numel < 0 or numel * types[key].itemsize > left:
            raise _Refused(f"Storage {key!r} declares {numel} {types[key]} elements, more "
                           f"than the {left} bytes left in the file.")
        stored[key] = numel, pos
        pos += numel * types[key].itemsize

    def read(storage_type, key, numel):
        if key not in stored:
            raise _Refused(f"Storage {key!r} is not in the file.")
        count, start = stored[key]
        if storage_type is not types[key] or count != numel:
            raise _Refused(f"Storage {key!r} holds {count} {types[key]} elements, not "
                           f"{numel} {storage_type}.")
        return storage_type.decode(memoryview(data)[start:start + numel * storage_type.itemsize])

    return _Storages(read).state_dict(_state_dict_items(obj))


def load_state_dict(path):
    """Reads a `.pth` state dict as `{name: numpy array}`, without torch.

    Raises:
        ValueError: the file is missing, not a PyTorch state dict, truncated,
            or refers to anything but tensors, or its tensors reach outside
            their storages (nothing in the file is executed).
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _load_zip(archive)
        with open(path, "rb") as f:
            return _load_legacy(f.read())
    except _Refused as exc:
        detail = str(exc)
    except Exception as exc:  # a hostile file makes zipfile, pickle and numpy raise many types
        detail = f"{type(exc).__name__}: {_brief(str(exc))}."
    raise ValueError(f"Cannot read {path!r} as a PyTorch state dict. {detail} "
                     f"Received: weights={path}")
