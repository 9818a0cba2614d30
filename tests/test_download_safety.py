"""Downloads that cannot hurt the cache: bad bodies, stalls, changed files, leftovers."""

import contextlib
import errno
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
from test_weights import use_hashes, write_keras_h5

import keras_lightnets as kl
from keras_lightnets import weights as wl
from keras_lightnets.weights import download

NAME = "mobilenet_2_5_128_tf_no_top.h5"  # the entry of MobileNet(alpha=0.25, include_top=False)
SHAPE = (128, 128, 3)


def tiny(weights="imagenet"):
    return kl.MobileNet(alpha=0.25, include_top=False, input_shape=SHAPE, weights=weights)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid keras.applications-layout file for NAME, and the model it came from."""
    ref = tiny(weights=None)
    rng = np.random.default_rng(0)
    ref.set_weights([rng.uniform(0.5, 1.0, w.shape).astype("float32") for w in ref.weights])
    path = write_keras_h5(ref, tmp_path_factory.mktemp("good") / NAME)
    return path.read_bytes(), ref


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(wl.MIRROR_ENV, raising=False)
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)
    return home


@contextlib.contextmanager
def serve(monkeypatch, body, mode="good"):
    """Serves `body` for every path from 127.0.0.1 and points the mirror at it.

    mode: "good", "no_length" (half the body, no Content-Length), "short" (half
    the body under the full Content-Length) or "stall" (headers and a few bytes,
    then silence until the test ends).
    """
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if body.startswith(b"<") else
                             "application/octet-stream")
            if mode != "no_length":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "good":
                self.wfile.write(body)
            elif mode == "stall":
                self.wfile.write(body[:64])
                self.wfile.flush()
                release.wait(10)
            else:
                self.wfile.write(body[: len(body) // 2])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(wl.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def models_dir(home):
    folder = home / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_loaded(model, ref):
    for mine, theirs in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("mode, body, match", [
    pytest.param("no_length", None, "not a loadable weights file", id="truncated_no_length"),
    pytest.param("good", b"<html><body>Sign in to the hotel Wi-Fi</body></html>" * 20,
                 "not a loadable weights file", id="captive_portal_html"),
    pytest.param("short", None, "of the .* bytes announced", id="content_length_mismatch"),
])
def test_bad_body_is_not_cached_and_a_good_mirror_then_works(home, monkeypatch, good, mode, body,
                                                            match):
    data, ref = good
    with serve(monkeypatch, body or data, mode), pytest.raises(wl.WeightsDownloadError) as info:
        tiny()
    message = str(info.value)
    assert "\n" not in message and wl.MIRROR_ENV in message
    assert str(home / "models" / NAME) in message
    assert re.search(match, message), message
    assert models_dir(home) == []
    with serve(monkeypatch, data):
        assert_loaded(tiny(), ref)
    assert models_dir(home) == [NAME, NAME + ".sha256"]


@pytest.mark.parametrize("mode, match", [("good", "announces .* over the 4096 byte cap"),
                                         ("no_length", "exceeds the 4096 byte cap")])
def test_body_over_the_size_cap_is_refused(home, monkeypatch, good, mode, match):
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 4096)
    with serve(monkeypatch, good[0], mode), pytest.raises(wl.WeightsDownloadError, match=match):
        tiny()
    assert models_dir(home) == []


def test_stalled_server_times_out(home, monkeypatch, good):
    monkeypatch.setenv(download.TIMEOUT_ENV, "1")
    start = time.monotonic()
    with serve(monkeypatch, good[0], "stall"), pytest.raises(wl.WeightsDownloadError,
                                                             match="timed out"):
        tiny()
    assert time.monotonic() - start < 5
    assert models_dir(home) == []


def test_timeout_variable_is_checked(home, monkeypatch):
    monkeypatch.setenv(download.TIMEOUT_ENV, "soon")
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="Received: KERAS_LIGHTNETS_DOWNLOAD_TIMEOUT='soon'"):
        tiny()
    monkeypatch.delenv(download.TIMEOUT_ENV)
    assert download.download_timeout() == download.DEFAULT_TIMEOUT


def test_changed_cached_file_is_refused_naming_what_to_delete(home, monkeypatch, good, tmp_path):
    data, ref = good
    with serve(monkeypatch, data):
        tiny()
    cached = home / "models" / NAME
    recorded = (home / "models" / (NAME + ".sha256")).read_text().split()[0]
    assert recorded == hashlib.sha256(data).hexdigest()
    other = tiny(weights=None)
    write_keras_h5(other, cached)  # a valid file, but not the one first downloaded
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=f"Delete {cached} and {cached}.sha256"):
        tiny()
    # With the file deleted but its record kept, a different download is refused too.
    cached.unlink()
    write_keras_h5(other, tmp_path / NAME)
    with serve(monkeypatch, (tmp_path / NAME).read_bytes()), \
            pytest.raises(ValueError, match=f"Delete {cached}.sha256 to accept the new file"):
        tiny()
    assert not cached.exists()


def test_unchanged_cached_file_is_not_hashed_again(home, monkeypatch, good):
    data, ref = good
    with serve(monkeypatch, data):
        tiny()
    cached = home / "models" / NAME

    def no_hashing(*args):
        raise AssertionError("an unchanged recorded file was hashed again")

    monkeypatch.setattr(download, "file_digest", no_hashing)
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    np.testing.assert_array_equal(tiny().get_weights()[0], ref.get_weights()[0])
    os.utime(cached, ns=(0, 0))  # touched: the next load hashes it again
    with pytest.raises(AssertionError, match="hashed again"):
        tiny()


def test_unreadable_unrecorded_cached_file_is_downloaded_again(home, monkeypatch, good):
    data, ref = good
    (home / "models").mkdir()
    (home / "models" / NAME).write_bytes(data[: len(data) // 3])  # left by an older version
    with serve(monkeypatch, data), pytest.warns(UserWarning, match="Deleting the unreadable"):
        assert_loaded(tiny(), ref)
    assert (home / "models" / NAME).read_bytes() == data
    assert models_dir(home) == [NAME, NAME + ".sha256"]


def test_stale_part_files_are_removed_live_ones_kept(home, monkeypatch, good):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    folder = home / "models"
    folder.mkdir()
    stale = folder / f"{NAME}.part-{dead}-dead0001.h5"
    live = folder / f"{NAME}.part-{os.getpid()}-live0001.h5"
    old = folder / f"{NAME}.part-{os.getpid()}-old00001.h5"
    for path in (stale, live, old):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    with serve(monkeypatch, good[0]):
        tiny()
    assert models_dir(home) == sorted([NAME, NAME + ".sha256", live.name])


def test_file_typed_keras_home_is_a_clear_error(tmp_path, monkeypatch, good):
    not_a_folder = tmp_path / "keras_home"
    not_a_folder.write_text("")
    monkeypatch.setenv("KERAS_HOME", str(not_a_folder))
    with serve(monkeypatch, good[0]), pytest.raises(wl.WeightsDownloadError) as info:
        tiny()
    message = str(info.value)
    assert "\n" not in message
    assert f"weights cache folder {not_a_folder / 'models'}" in message
    assert "Set KERAS_HOME to a writable folder" in message


def test_read_only_cache_folder_is_a_clear_error(home, monkeypatch, good):
    # Running as root ignores permission bits: refuse the part file's creation instead.
    (home / "models").mkdir()

    def read_only(path, mode="r", *args, **kwargs):
        if ".part-" in os.fspath(path) and "x" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download, "open", read_only, raising=False)
    denied = r"models \(Permission denied\)\. Set KERAS_HOME to a writable folder"
    with serve(monkeypatch, good[0]), pytest.raises(wl.WeightsDownloadError, match=denied):
        tiny()
    assert models_dir(home) == []


def test_nan_weights_are_refused(home, monkeypatch, good, tmp_path):
    data, ref = good
    bad = tiny(weights=None)
    values = bad.get_weights()
    values[3][0] = np.nan
    bad.set_weights(values)
    path = write_keras_h5(bad, tmp_path / NAME)
    with pytest.raises(ValueError, match=f"{NAME}.* holds NaN or Inf"):
        wl.load_file(tiny(weights=None), path)
    wl.load_file(tiny(weights=None), path, allow_nan=True)
    with serve(monkeypatch, path.read_bytes()), pytest.raises(wl.WeightsDownloadError,
                                                              match="NaN or Inf"):
        tiny()
    assert models_dir(home) == []
    torch = pytest.importorskip("torch")
    pth = tmp_path / "nan.pth"
    torch.save({"conv1.0.weight": torch.full((2, 3), float("inf"))}, pth)
    with pytest.raises(ValueError, match="nan.pth.* holds NaN or Inf .*conv1.0.weight"):
        wl.load_file(kl.ShuffleNetV2(alpha=0.5, weights=None), pth)


@pytest.mark.torch
def test_full_disk_while_caching_converted_weights(home, monkeypatch, tmp_path):
    from conftest import import_torchvision

    torch, tvm = import_torchvision()
    name = "shufflenetv2_x0.5-f707e7126e.pth"
    torch.save(tvm.shufflenet_v2_x0_5().state_dict(), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    use_hashes(monkeypatch, **{name: hashlib.sha256(data).hexdigest()})
    expected = wl.load_file(kl.ShuffleNetV2(alpha=0.5, weights=None), tmp_path / name)

    def disk_full(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", filepath)

    monkeypatch.setattr(keras.Model, "save_weights", disk_full)
    with serve(monkeypatch, data), pytest.warns(UserWarning, match="No space left on device"):
        model = kl.ShuffleNetV2(alpha=0.5, weights="imagenet")
    assert_loaded(model, expected)
    assert list((home / "keras_lightnets").iterdir()) == []
    assert models_dir(home) == [name]  # a published hash: no record needed
