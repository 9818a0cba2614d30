"""Reading PaddlePaddle `.pdparams` state dicts without paddle and without trusting the file.

A `.pdparams` file (`paddle.save` of a layer's `state_dict()`) is a pickle,
protocol 2 to 4, of a dict of numpy arrays. Before the unpickler sees it, `pth`'s
opcode scan bounds its size, the objects it makes and how deeply it nests. The
unpickler then resolves only numpy's array reconstruction (`_reconstruct` of an
`ndarray`, `dtype`, and protocol 2's `_codecs.encode` to latin-1 and empty
`bytes()`), each to an immutable stand-in that checks its arguments; any other
global is refused and nothing in the file is executed.
"""

import codecs
import io
import os
import pickle
import struct

import numpy as np

from keras_lightnets.weights import pth

# PaddleClas's largest mobile files hold some 45 MB of float32 in the pickle itself.
_MAX_FILE_BYTES = 512 << 20
# `paddle.save` stores the structured-to-parameter name table next to the tensors.
_NAME_TABLE = "StructuredToParameterName@@"
# PaddleClas's SSLD files hold the distilled student under this prefix.
_STUDENT = "Student."
# Arrays of these kinds become float32; object and structured arrays are refused.
_NUMERIC = "fiub"


class _Class(pth._Token):
    """Stands for `numpy.ndarray`, which only `_reconstruct` may receive."""

    __slots__ = ()


_NDARRAY = _Class()


def _reconstruct(cls, shape, dtype):
    # numpy's pickles start from an empty array that BUILD (`__setstate__`) fills;
    # `__setstate__` checks the data against the shape and dtype it is given.
    if cls is not _NDARRAY:
        raise pth._Refused(f"It reconstructs {pth._brief(cls)}, not a numpy array.")
    return np.ndarray((0,), "b")


def _dtype(spec, align=False, copy=True):
    del align, copy  # always a new dtype: BUILD must not change numpy's shared ones
    if type(spec) is not str:
        raise pth._Refused(f"Its dtype {pth._brief(spec)} is not a dtype name.")
    dtype = np.dtype(spec, False, True)
    if dtype.kind not in _NUMERIC:
        raise pth._Refused(f"Its dtype {spec!r} is not numeric.")
    return dtype


def _encode(text, encoding):
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise pth._Refused("It encodes something other than latin-1 array bytes.")
    return codecs.encode(text, "latin1")


def _empty_bytes(*args):
    # Protocol 2 pickles b"" (an empty array's data) as `bytes()`.
    if args:
        raise pth._Refused("It calls bytes() with arguments.")
    return b""


_ALLOWED = {
    ("__builtin__", "bytes"): pth._Function(fn=_empty_bytes),
    ("builtins", "bytes"): pth._Function(fn=_empty_bytes),
    ("numpy.core.multiarray", "_reconstruct"): pth._Function(fn=_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): pth._Function(fn=_reconstruct),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): pth._Function(fn=_dtype),
    ("_codecs", "encode"): pth._Function(fn=_encode),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pth._Refused(f"Refusing to load {module}.{name}: a .pdparams file holds "
                               "only numpy arrays.")
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise pth._Refused(f"Unsupported persistent id {pth._brief(pid)}.")


def _arrays(obj):
    if type(obj) is not dict:
        raise pth._Refused("It does not hold a dict of arrays.")
    out = {}
    for key, value in dict.items(obj):
        if type(key) is not str:
            raise pth._Refused(f"State dict key {pth._brief(key)} is not a string.")
        if key == _NAME_TABLE:
            continue
        if (type(value) is not np.ndarray or value.dtype.kind not in _NUMERIC
                or value.dtype.hasobject or value.dtype.fields is not None):
            raise pth._Refused(f"State dict entry {key!r} is not a numeric array.")
        name = key.removeprefix(_STUDENT)
        if name in out:
            raise pth._Refused(f"State dict key {name!r} appears twice.")
        out[name] = value.astype("float32")
    return out


def load_state_dict(path):
    """Reads a `.pdparams` state dict as `{name: float32 numpy array}`, without paddle.

    Skips `paddle.save`'s `StructuredToParameterName@@` table and strips the
    `Student.` prefix of distilled (SSLD) files.

    Raises:
        ValueError: the file is missing, too large, truncated, not a dict of
            numeric arrays, or refers to anything but numpy arrays (nothing
            in the file is executed).
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) > _MAX_FILE_BYTES:
            raise pth._Refused(f"It is larger than {_MAX_FILE_BYTES} bytes.")
        with open(path, "rb") as f:
            data = f.read()
        try:
            end = pth._scan(data, 0, _MAX_FILE_BYTES)
        except (IndexError, ValueError, struct.error):  # an argument runs past the end
            raise pth._Refused("It is truncated.") from None
        if end != len(data):
            raise pth._Refused(f"{len(data) - end} bytes follow its pickle.")
        return _arrays(_Unpickler(io.BytesIO(data)).load())
    except pth._Refused as exc:
        detail = str(exc)
    except Exception as exc:  # a hostile file makes pickle and numpy raise many types
        detail = f"{type(exc).__name__}: {pth._brief(str(exc))}."
    raise ValueError(f"Cannot read {path!r} as a PaddlePaddle .pdparams state dict. {detail} "
                     f"Received: weights={path}")
