""".pth reading against hostile files: bounds, poisoning, bombs, crashes, error messages.

The reader is loaded straight from its file: importing `keras_lightnets` would
import TensorFlow, which these tests do not need.
"""

import importlib.util
import io
import pickle
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import ROOT

PTH_FILE = ROOT / "keras_lightnets" / "weights" / "pth.py"


def _load_reader():
    spec = importlib.util.spec_from_file_location("_pth_under_test", PTH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pth = _load_reader()


# -- hand-written pickles -----------------------------------------------------------------


def p_str(s):
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def p_int(n):
    if -(2**31) <= n < 2**31:
        return pickle.BININT + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def p_global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def p_tuple(*items):
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def p_tensor(storage_key, numel, offset, size, stride, storage="FloatStorage", legacy=False):
    """torch's `_rebuild_tensor_v2` call, as torch.save writes it."""
    pid = [p_str("storage"), p_global("torch", storage), p_str(storage_key), p_str("cpu"),
           p_int(numel)] + ([pickle.NONE] if legacy else [])
    return (p_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK
            + p_tuple(*pid) + pickle.BINPERSID + p_int(offset)
            + p_tuple(*map(p_int, size)) + p_tuple(*map(p_int, stride)) + pickle.NEWFALSE
            + p_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
            + pickle.TUPLE + pickle.REDUCE)


def p_state_dict(entries):
    """A pickled dict of `{key: pickled value}`."""
    body = b"".join(p_str(k) + v for k, v in entries.items())
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS \
        + pickle.STOP


def write_zip(path, data_pkl, storages, compression=zipfile.ZIP_STORED):
    """The zip layout: archive/data.pkl, archive/data/<key>, archive/version."""
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("archive/data.pkl", data_pkl)
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


def write_legacy(path, data_pkl, storages):
    """The legacy stream: magic, protocol, system info, pickle, keys, then (numel, bytes)."""
    buf = io.BytesIO()
    for obj in (pth.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    buf.write(data_pkl)
    pickle.dump(list(storages), buf, protocol=2)
    for numel, raw in storages.values():
        buf.write(struct.pack("<q", numel) + raw)
    path.write_bytes(buf.getvalue())
    return path


def hostile(tmp_path, layout, key, numel, offset, size, stride, stored=4):
    """A file whose tensor `key` views a storage of `stored` floats as the arguments say."""
    raw = np.arange(stored, dtype="<f4").tobytes()
    path = tmp_path / f"hostile_{layout}.pth"
    data = p_state_dict({key: p_tensor("0", numel, offset, size, stride,
                                       legacy=layout == "legacy")})
    if layout == "zip":
        return write_zip(path, data, {"0": raw})
    return write_legacy(path, data, {"0": (stored, raw)})


def refuses(path, *fragments):
    """Loading `path` raises ValueError naming it, ending `Received: weights=<path>`."""
    with pytest.raises(ValueError) as info:
        pth.load_state_dict(path)
    message = str(info.value)
    assert message.endswith(f"Received: weights={path}"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- tensors against their storages -------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("offset,size,stride", [
    (0, (4096,), (1,)),  # the reported read of heap bytes
    (10, (1,), (1,)),
    (3, (2,), (1,)),
    (0, (2, 2), (3, 1)),
    (0, (4,), (2,)),
])
def test_tensor_reaching_outside_its_storage_is_refused_naming_file_and_key(
        tmp_path, layout, offset, size, stride):
    path = hostile(tmp_path, layout, "fc.weight", 4, offset, size, stride)
    refuses(path, str(path), "'fc.weight'")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("offset,size,stride", [
    (-1, (1,), (1,)), (0, (-2,), (1,)), (0, (2,), (-1,)), (0, (2,), (1, 1)),
])
def test_negative_or_mismatched_geometry_is_refused(tmp_path, layout, offset, size, stride):
    path = hostile(tmp_path, layout, "fc.bias", 4, offset, size, stride)
    refuses(path, "'fc.bias'")


def test_storage_declared_larger_than_its_entry_is_refused(tmp_path):
    path = tmp_path / "short_entry.pth"
    data = p_state_dict({"fc.weight": p_tensor("0", 4096, 0, (4096,), (1,))})
    write_zip(path, data, {"0": np.zeros(4, "<f4").tobytes()})
    refuses(path, "'fc.weight'", "data/0")


def test_shared_and_repeated_storages_within_bounds_still_load(tmp_path):
    data = p_state_dict({
        "a": p_tensor("0", 6, 0, (2, 3), (3, 1)),
        "tied": p_tensor("0", 6, 0, (3, 2), (1, 3)),
        "tail": p_tensor("0", 6, 5, (), ()),
        "expanded": p_tensor("0", 6, 2, (3, 4), (0, 1)),
        "empty": p_tensor("0", 6, 0, (0, 5), (5, 1)),
    })
    path = write_zip(tmp_path / "shared.pth", data, {"0": np.arange(6, dtype="<f4").tobytes()})
    out = pth.load_state_dict(path)
    base = np.arange(6, dtype="float32")
    np.testing.assert_array_equal(out["a"], base.reshape(2, 3))
    np.testing.assert_array_equal(out["tied"], base.reshape(2, 3).T)
    np.testing.assert_array_equal(out["tail"], np.float32(5))
    np.testing.assert_array_equal(out["expanded"], np.tile(base[2:6], (3, 1)))
    assert out["empty"].shape == (0, 5)
    out["a"][0, 0] = 7  # private copies: one key's array never aliases another's
    assert out["tied"][0, 0] == 0


# -- crashes: each in its own process, so a segfault fails the test, not pytest ------------

CRASH_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("pth", sys.argv[1])
pth = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pth)
for path in sys.argv[2:]:
    try:
        pth.load_state_dict(path)
        print("LOADED", path)
    except ValueError as exc:
        print("ValueError:", exc)
"""


def load_in_subprocess(*paths):
    """One output line per file, from a process of its own: a crash fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(PTH_FILE), *map(str, paths)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout.splitlines()


def test_huge_size_or_negative_stride_is_refused_without_crashing(tmp_path):
    paths = []
    for layout in ("zip", "legacy"):
        for i, (size, stride) in enumerate([((2**27,), (1,)), ((4,), (-1,)),
                                            ((2**62,), (0,)), ((2**20, 2**20), (0, 0))]):
            directory = tmp_path / f"{layout}{i}"
            directory.mkdir()
            paths.append(hostile(directory, layout, "fc.weight", 4, 0, size, stride))
    lines = load_in_subprocess(*paths)
    assert len(lines) == len(paths), lines
    for path, line in zip(paths, lines, strict=True):
        assert line.startswith("ValueError:") and "'fc.weight'" in line, line
        assert line.endswith(f"Received: weights={path}"), line


def test_deep_tuples_and_memo_jumps_are_refused_without_crashing(tmp_path):
    # The C unpickler hashes dict keys recursively (a million nested tuples overflow
    # its stack) and sizes its memo to the largest index it is given.
    deep = pickle.EMPTY_TUPLE + pickle.TUPLE1 * 1_000_000
    nested_key = write_zip(tmp_path / "deep.pth", pickle.PROTO + b"\x02" + pickle.EMPTY_DICT
                           + deep + p_int(1) + pickle.SETITEM + pickle.STOP, {})
    memo = write_zip(tmp_path / "memo.pth", pickle.PROTO + b"\x02" + pickle.EMPTY_DICT
                     + pickle.LONG_BINPUT + struct.pack("<I", 2**30) + pickle.STOP, {})
    lines = load_in_subprocess(nested_key, memo)
    assert len(lines) == 2, lines
    assert lines[0].startswith("ValueError:") and "nests tuples" in lines[0], lines[0]
    assert lines[1].startswith("ValueError:") and "memo" in lines[1], lines[1]


# -- poisoning ----------------------------------------------------------------------------


def p_build(target, state):
    return target + state + pickle.BUILD


def p_dict(**items):
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(
        p_str(k) + v for k, v in items.items()) + pickle.SETITEMS


POISONS = {
    "storage_dict_state": p_build(p_global("torch", "FloatStorage"),
                                  p_dict(dtype=p_str("<f2"), itemsize=p_int(1))),
    "storage_slot_state": p_build(p_global("torch", "FloatStorage"),
                                  p_tuple(pickle.NONE, p_dict(dtype=p_str("bfloat16")))),
    "rebuild_function": p_build(p_global("torch._utils", "_rebuild_tensor_v2"),
                                p_tuple(pickle.NONE, p_dict(fn=p_global("collections",
                                                                        "OrderedDict")))),
    "rebuild_function_dict": p_build(p_global("torch._utils", "_rebuild_parameter"),
                                     p_dict(__defaults__=p_tuple(p_int(0)))),
    "ordereddict_class": p_build(p_global("collections", "OrderedDict"),
                                 p_tuple(pickle.NONE, p_dict(__init__=pickle.NONE))),
    "ordereddict_instance": p_build(
        p_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE,
        p_tuple(p_dict(items=p_global("collections", "OrderedDict"),
                       __setstate__=p_global("torch._utils", "_rebuild_parameter")),
                p_dict(__class__=p_global("collections", "OrderedDict")))),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_build_cannot_change_how_later_files_are_read(tmp_path, poison):
    torch = pytest.importorskip("torch")
    evil = write_zip(tmp_path / "evil.pth", p_state_dict({"x": POISONS[poison]}), {})
    try:
        pth.load_state_dict(evil)
    except ValueError as exc:
        assert str(exc).endswith(f"Received: weights={evil}")
    genuine = tmp_path / "genuine.pth"
    torch.save({"w": torch.arange(4.0), "h": torch.arange(3).half()}, genuine)
    out = pth.load_state_dict(genuine)
    np.testing.assert_array_equal(out["w"], np.array([0, 1, 2, 3], "float32"))
    np.testing.assert_array_equal(out["h"], np.array([0, 1, 2], "float16"))
    float_storage = pth._ALLOWED[("torch", "FloatStorage")]
    assert (float_storage.dtype, float_storage.itemsize) == ("<f4", 4)


def test_state_dict_carrying_build_attributes_reads_only_its_items(tmp_path):
    # BUILD may set attributes on the state dict itself (torch puts `_metadata` there);
    # the reader iterates it as a dict, whatever methods the file tried to shadow.
    data = (pickle.PROTO + b"\x02" + p_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.MARK + p_str("w") + p_tensor("0", 4, 0, (4,), (1,))
            + pickle.SETITEMS
            + p_dict(items=p_global("collections", "OrderedDict"),
                     keys=p_global("collections", "OrderedDict"))
            + pickle.BUILD + pickle.STOP)
    path = write_zip(tmp_path / "shadowed.pth", data, {"0": np.arange(4, dtype="<f4").tobytes()})
    out = pth.load_state_dict(path)
    assert list(out) == ["w"]
    np.testing.assert_array_equal(out["w"], np.arange(4, dtype="float32"))


# -- unbounded work -----------------------------------------------------------------------


def test_zip_bomb_entry_is_refused_without_inflating(tmp_path):
    path = tmp_path / "bomb.pth"
    data = p_state_dict({"fc.weight": p_tensor("0", 4, 0, (4,), (1,))})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", data)
        with z.open("archive/data/0", "w") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    start = time.perf_counter()
    refuses(path, "'fc.weight'", "data/0")
    assert time.perf_counter() - start < 5


def test_zip_entry_lying_about_its_size_inflates_no_more_than_needed(tmp_path):
    """Headers claiming 16 bytes over 64 MiB of deflated zeros: no more than needed inflates."""
    path = tmp_path / "liar.pth"
    data = p_state_dict({"fc.weight": p_tensor("0", 4, 0, (4,), (1,))})
    name = "archive/data/0"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", data)
        with z.open(name, "w") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
        local = z.getinfo(name).header_offset
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46:central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 1)
    for size_at in (local + 22, central + 24):
        raw[size_at:size_at + 4] = struct.pack("<I", 16)
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).getinfo(name).file_size == 16
    start = time.perf_counter()
    try:
        out = pth.load_state_dict(path)
        np.testing.assert_array_equal(out["fc.weight"], np.zeros(4, "float32"))
    except ValueError as exc:  # the CRC of the 64 MiB no longer matches what was read
        assert str(exc).endswith(f"Received: weights={path}")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("numel", [2**40, 2**62, -1])
def test_legacy_storage_larger_than_the_file_is_refused(tmp_path, numel):
    path = tmp_path / "legacy_huge.pth"
    data = p_state_dict({"fc.weight": p_tensor("0", 4, 0, (4,), (1,), legacy=True)})
    write_legacy(path, data, {"0": (numel, np.zeros(4, "<f4").tobytes())})
    refuses(path, str(path), "'0'")


def test_oversized_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(pth, "_MAX_PICKLE_BYTES", 64)
    data = p_state_dict({"fc.weight": p_tensor("0", 4, 0, (4,), (1,))})
    path = write_zip(tmp_path / "big_pickle.pth", data, {"0": bytes(16)})
    refuses(path, "pickle")
    legacy = write_legacy(tmp_path / "big_legacy.pth", p_state_dict(
        {"fc.weight": p_tensor("0", 4, 0, (4,), (1,), legacy=True)}), {"0": (4, bytes(16))})
    refuses(legacy, "pickle")


# -- every failure is a ValueError naming the file ----------------------------------------


BAD_PICKLES = {
    "extension code": pickle.PROTO + b"\x02" + pickle.EXT1 + b"\x01" + pickle.STOP,
    "truncated": p_state_dict({"w": p_tensor("0", 4, 0, (4,), (1,))})[:-20],
    "not a dict": pickle.PROTO + b"\x02" + p_int(3) + pickle.STOP,
    "tensor at top": pickle.PROTO + b"\x02" + p_tensor("0", 4, 0, (4,), (1,)) + pickle.STOP,
    "int key": pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + p_int(1)
    + p_tensor("0", 4, 0, (4,), (1,)) + pickle.SETITEM + pickle.STOP,
    "not a tensor": p_state_dict({"w": p_int(1)}),
    "code": p_state_dict({"w": p_global("builtins", "eval")}),
    "newobj": pickle.PROTO + b"\x02" + p_global("collections", "OrderedDict")
    + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.STOP,
    "bad pid": p_state_dict({"w": p_tuple(p_str("storage")) + pickle.BINPERSID}),
    "unknown storage": p_state_dict({"w": p_tensor("9", 4, 0, (4,), (1,))}),
    "bool size": p_state_dict({"w": p_tensor("0", 4, 0, (4,), (1,)).replace(
        pickle.MARK + p_int(4) + pickle.TUPLE, pickle.MARK + pickle.NEWTRUE + pickle.TUPLE)}),
    "storage types disagree": p_state_dict({
        "a": p_tensor("0", 4, 0, (4,), (1,)),
        "b": p_tensor("0", 4, 0, (4,), (1,), storage="IntStorage")}),
    "storage not a type": p_state_dict({"w": p_tensor("0", 4, 0, (4,), (1,)).replace(
        p_global("torch", "FloatStorage"), p_str("FloatStorage"))}),
}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("case", sorted(BAD_PICKLES))
def test_every_bad_pickle_is_a_value_error_naming_the_file(tmp_path, layout, case):
    path = tmp_path / f"{case.replace(' ', '_')}.pth"
    if layout == "zip":
        write_zip(path, BAD_PICKLES[case], {"0": np.zeros(4, "<f4").tobytes()})
    else:
        write_legacy(path, BAD_PICKLES[case], {})
    refuses(path, str(path))


def test_missing_empty_and_malformed_files_are_value_errors_naming_them(tmp_path):
    refuses(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    refuses(tmp_path / "empty.pth")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not really a zip")
    refuses(tmp_path / "junk.pth")
    odd = write_zip(tmp_path / "odd.pth", p_state_dict({"w": p_tensor("0", 4, 0, (4,), (1,))}),
                    {"0": bytes(15)})
    refuses(odd, "'w'")
    no_pickle = tmp_path / "no_pickle.pth"
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("archive/version", "3\n")
    refuses(no_pickle)
    truncated = tmp_path / "truncated.pth"
    write_legacy(truncated, p_state_dict({"w": p_tensor("0", 4, 0, (4,), (1,), legacy=True)}),
                 {"0": (4, bytes(16))})
    truncated.write_bytes(truncated.read_bytes()[:-3])
    refuses(truncated, "'0'")


# -- genuine files ------------------------------------------------------------------------


@pytest.mark.parametrize("new_zipfile", [True, False])
@pytest.mark.parametrize("protocol", [2, 4])
def test_genuine_files_round_trip_exactly(tmp_path, new_zipfile, protocol):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=gen)
    state = collections_ordered({
        "f32": torch.randn(3, 2, 3, 3, generator=gen),
        "f16": torch.randn(5, generator=gen).half(),
        "bf16": torch.randn(7, generator=gen).bfloat16(),
        "f64": torch.randn(2, 2, generator=gen).double(),
        "i64": torch.tensor(7),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "strided": base[:, ::2],
        "transposed": base.t(),
        "offset": base[2:4],
        "expanded": torch.arange(3.0).expand(4, 3),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
    })
    path = tmp_path / "genuine.pth"
    torch.save(state, path, _use_new_zipfile_serialization=new_zipfile, pickle_protocol=protocol)
    out = pth.load_state_dict(path)
    assert list(out) == list(state)
    for key, value in state.items():
        value = value.detach()
        expected = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
        assert out[key].dtype == expected.dtype and out[key].shape == expected.shape, key
        np.testing.assert_array_equal(out[key], expected, err_msg=key)


def collections_ordered(d):
    import collections

    return collections.OrderedDict(d)


def test_genuine_module_state_dict_with_metadata_loads(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "module.pth"
    torch.save(model.state_dict(), path)
    out = pth.load_state_dict(path)
    assert list(out) == list(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(out[key], value.numpy())
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, checkpoint)
    assert list(pth.load_state_dict(checkpoint)) == list(model.state_dict())
