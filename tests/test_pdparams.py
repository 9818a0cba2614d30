""".pdparams reading: PaddlePaddle's own files read back exactly; hostile, truncated and
malformed files are refused, nothing in them run, nothing left in the cache."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import paddle_ref
import pytest

from keras_lightnets.weights import download, pdparams


class _Command:
    """Pickles as a call of `os.system` (what a hostile file would carry)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _write(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _refused(path, *fragments):
    with pytest.raises(ValueError) as info:
        pdparams.load_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_command_in_the_pickle_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = _write(tmp_path / "hostile.pdparams",
                  {"conv.weight": np.ones(3, "float32"), "x": _Command(f"touch {marker}")},
                  protocol)
    _refused(path, "Refusing to load", "system")
    assert not marker.exists()


@pytest.mark.parametrize("obj, fragment", [
    ([np.ones(2, "float32")], "dict of arrays"),
    ({1: np.ones(2, "float32")}, "not a string"),
    ({"a": [1.0, 2.0]}, "not a numeric array"),
    ({"a": "text"}, "not a numeric array"),
    ({"a": np.array([1, "x"], dtype=object)}, "not numeric"),
    ({"a": np.zeros(2, [("f", "f4"), ("g", "i4")])}, "Cannot read"),
    ({"Student.a": np.ones(1, "f4"), "a": np.ones(1, "f4")}, "twice"),
])
def test_malformed_contents_are_refused(tmp_path, obj, fragment):
    _refused(_write(tmp_path / "bad.pdparams", obj), fragment)


def test_truncated_file_is_refused(tmp_path):
    data = pickle.dumps({"conv.weight": np.arange(1000, dtype="float32")}, protocol=4)
    for cut in (1, 40, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pdparams"
        path.write_bytes(data[:cut])
        _refused(path, "truncated")
    (tmp_path / "trailing.pdparams").write_bytes(data + b"junk")
    _refused(tmp_path / "trailing.pdparams", "follow its pickle")
    (tmp_path / "empty.pdparams").write_bytes(b"")
    _refused(tmp_path / "empty.pdparams")
    _refused(tmp_path / "missing.pdparams", "FileNotFoundError")


def test_student_prefix_stripped_and_name_table_skipped(tmp_path):
    weight = np.arange(6, dtype="float64").reshape(2, 3)
    path = _write(tmp_path / "ssld.pdparams", {
        "Student.conv.weight": weight, "StructuredToParameterName@@": {"conv.weight": "w_0"}})
    state = pdparams.load_state_dict(path)
    assert list(state) == ["conv.weight"]
    assert state["conv.weight"].dtype == np.float32
    np.testing.assert_array_equal(state["conv.weight"], weight)


_SAVE = textwrap.dedent("""
    import sys
    import numpy as np
    import paddle
    rng = np.random.default_rng(0)
    arrays = {"conv.weight": rng.normal(size=(8, 3, 3, 3)).astype("float32"),
              "bn._variance": rng.uniform(size=5).astype("float32"),
              "fc.weight": rng.normal(size=(7, 4)).astype("float32"),
              "empty": np.zeros((0, 2), "float32")}
    np.savez(sys.argv[1] + ".npz", **arrays)
    state = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    paddle.save(state, sys.argv[1], protocol=int(sys.argv[2]))
""")


@pytest.mark.parametrize("protocol", [2, 4])
def test_file_written_by_paddle_save_reads_back_exactly(tmp_path, protocol):
    if not paddle_ref._installed():
        pytest.skip("paddlepaddle is a dev dependency")
    path = tmp_path / "saved.pdparams"
    # Paddle cannot share a process with TensorFlow.
    subprocess.run([sys.executable, "-c", _SAVE, str(path), str(protocol)], check=True,
                   capture_output=True, timeout=300)
    state = pdparams.load_state_dict(path)
    with np.load(f"{path}.npz") as expected:
        assert sorted(state) == sorted(expected.files)
        for key in expected.files:
            assert state[key].shape == expected[key].shape
            np.testing.assert_array_equal(state[key], expected[key])


@pytest.mark.parametrize("kind", ["hostile", "truncated"])
def test_bad_file_through_the_download_path_leaves_nothing_in_the_cache(
        tmp_path, monkeypatch, kind):
    home, served = tmp_path / "keras_home", tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    marker = tmp_path / "marker"
    if kind == "hostile":
        _write(served / "MobileNetV3_x.pdparams", {"a": _Command(f"touch {marker}")})
    else:
        data = pickle.dumps({"a": np.ones(100, "float32")}, protocol=4)
        (served / "MobileNetV3_x.pdparams").write_bytes(data[:-20])
    entry = {"file": "MobileNetV3_x.pdparams", "hash": None,
             "url": (served / "MobileNetV3_x.pdparams").as_uri()}
    loaded = []

    def load(path, new):
        loaded.append(pdparams.load_state_dict(path))

    with pytest.raises(download.WeightsDownloadError, match="not a loadable weights file"):
        download.fetch(entry, load)
    assert not loaded and not marker.exists()
    cache = home / download.CACHE_SUBDIR
    assert not cache.exists() or not any(cache.iterdir())
