"""weights="imagenet": manifest, download through a mirror, verification, cache, .pth reading."""

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import zipfile

import h5py
import harness
import keras
import numpy as np
import pytest
from conftest import ROOT, WEIGHTS, sample_photos, shared_file

import keras_lightnets as kl
from keras_lightnets import weights as wl
from keras_lightnets.weights import manifest


def write_keras_h5(model, path):
    """A weights-only legacy HDF5 file in keras.applications' layout."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


@contextlib.contextmanager
def http_server(directory):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private Keras cache and a directory the mirror serves."""
    home, served = tmp_path / "keras_home", tmp_path / "served"
    home.mkdir()
    served.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(wl.MIRROR_ENV, raising=False)
    return home, served


def use_hashes(monkeypatch, **digests):
    """The manifest with the given files' hashes replaced (test files are not the real ones)."""
    doc = json.loads(json.dumps(manifest.load_manifest()))
    for entry in doc["entries"]:
        if entry["file"] in digests:
            entry["hash"] = {"algorithm": "sha256", "value": digests[entry["file"]]}
    monkeypatch.setattr(manifest, "load_manifest", lambda: doc)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- the manifest ------------------------------------------------------------------------


def test_manifest_lists_every_published_file():
    from keras_lightnets.weights import sources

    entries = manifest.load_manifest()["entries"]
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files))
    imagenet = [e["family"] for e in entries if e["weights"] == "imagenet"]
    count = {f: imagenet.count(f) for f in set(imagenet)}
    assert count["MobileNet"] == 4 * 4 * 2
    assert count["MobileNetV2"] == (4 * 5 + 2) * 2
    assert count["MobileNetV3Large"] == count["MobileNetV3Small"] == 3 * 2
    assert count["ShuffleNetV2"] == 4 and count["SqueezeNet"] == 2 and count["MnasNet"] == 4
    assert [e["family"] for e in entries if e["weights"] == "megvii"] == ["ShuffleNetV1"] * 8
    required = {"file", "family", "variant", "weights", "input_size", "include_top", "url",
                "hash", "format", "preprocessing", "classes", "top1", "top1_source", "license",
                "params", "macs"}
    for e in entries:
        assert required <= set(e), e["file"]
        assert manifest.is_set_name(e["weights"]), e["file"]
        if e["format"] == "timm-safetensors":
            # Every timm hub file is `model.safetensors`: the cache name is `<model>.<tag>`.
            model_tag = e["file"].removesuffix(".safetensors")
            assert e["url"] == f"https://huggingface.co/timm/{model_tag}/resolve/main/model.safetensors"
        elif e["url"] is None:
            assert e.get("download"), e["file"]  # where to get it by hand
        else:
            assert e["url"].endswith("/" + e["file"])
        assert e["format"] in sources.SOURCES[e["source"]].formats
        if e["format"] == "torchvision-pth":
            # torchvision names carry a sha256 prefix: name-<prefix>.pth
            assert e["file"].split("-")[-1] == e["hash"]["value"] + ".pth"
        if e["family"].startswith("MobileNetV3") and e["format"] == "keras-h5":
            assert e["hash"]["algorithm"] == "md5" and len(e["hash"]["value"]) == 32


def _manifest_cases():
    # An entry whose source's flavour is not built yet fails
    # test_sources.py::test_manifest_entries_name_their_source instead.
    return [pytest.param(e, id=e["file"]) for e in manifest.load_manifest()["entries"]
            if e["input_size"] == 224 and hasattr(kl, e["family"]) and manifest.buildable(e)]


@pytest.mark.parametrize("entry", _manifest_cases())
def test_manifest_complexity_has_not_drifted(entry):
    params, macs = manifest.complexity(entry)
    assert entry["params"] == params
    assert entry["macs"] == macs


@pytest.mark.heavy
@pytest.mark.parametrize("entry", [pytest.param(e, id=e["file"])
                                   for e in manifest.load_manifest()["entries"]
                                   if e["input_size"] != 224])
def test_manifest_complexity_other_sizes(entry):
    assert (entry["params"], entry["macs"]) == manifest.complexity(entry)


def test_has_imagenet_weights_and_unpublished_variants():
    assert wl.has_imagenet_weights("MobileNetV2", {"alpha": 1.4})
    assert not wl.has_imagenet_weights("MobileNetV2", {"alpha": 0.9})
    assert wl.has_imagenet_weights("SqueezeNet", {"version": "1.0"})
    assert not wl.has_imagenet_weights("SqueezeNet", {"version": "1.0", "bypass": "simple"})
    with pytest.raises(ValueError, match="Variants with weights: .*MobileNetV2\\(alpha=0.35\\)"):
        manifest.find("MobileNetV2", {"alpha": 0.9}, True)


def test_entry_for_size_falls_back_to_224():
    e = manifest.find("MobileNetV2", {"alpha": 1.4}, False, rows=96)
    assert e["file"] == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5"
    e = manifest.find("MobileNet", {"alpha": 0.5}, True, rows=160)
    assert e["file"] == "mobilenet_5_0_160_tf.h5"


# -- keras-layout files through the mirror -------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_keras_h5_through_mirror_reproduces_reference(env, monkeypatch, scheme):
    home, served = env
    ref = keras.applications.MobileNetV2(weights=None, alpha=0.35, include_top=False,
                                         input_shape=(96, 96, 3))
    harness.randomize(ref, seed=5)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    write_keras_h5(ref, served / name)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    with contextlib.ExitStack() as stack:
        if scheme == "http":
            url = stack.enter_context(http_server(served))
        else:
            url = served.as_uri()
        monkeypatch.setenv(wl.MIRROR_ENV, url)
        model = kl.MobileNetV2(weights="imagenet", alpha=0.35, include_top=False,
                               input_shape=(96, 96, 3))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(ref(x)), atol=1e-5)
    assert (home / "models" / name).is_file()
    assert not [p for p in (home / "models").iterdir() if ".part-" in p.name]


def test_v3_md5_verified_and_corrupt_download_deleted(env, monkeypatch):
    home, served = env
    ref = keras.applications.MobileNetV3Small(weights=None, include_top=False)
    harness.randomize(ref, seed=2)
    name = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    write_keras_h5(ref, served / name)
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    # The published md5 does not match this file: it must be rejected and deleted.
    with pytest.raises(ValueError, match="deleted and nothing was loaded"):
        kl.MobileNetV3Small(weights="imagenet", include_top=False)
    assert not list((home / "models").iterdir())
    # With the file's own hash in the manifest it loads and matches keras.applications.
    use_hashes(monkeypatch, **{name: sha256(served / name)})
    model = kl.MobileNetV3Small(weights="imagenet", include_top=False)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(ref(x)), atol=1e-5)


def test_damaged_cached_file_is_replaced(env, monkeypatch):
    home, served = env
    ref = keras.applications.MobileNetV3Small(weights=None, include_top=False)
    name = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    write_keras_h5(ref, served / name)
    use_hashes(monkeypatch, **{name: sha256(served / name)})
    (home / "models").mkdir()
    (home / "models" / name).write_bytes(b"truncated")
    monkeypatch.setenv(wl.MIRROR_ENV, served.as_uri())
    kl.MobileNetV3Small(weights="imagenet", include_top=False)
    assert sha256(home / "models" / name) == sha256(served / name)


def test_no_network_error_names_url_cache_path_and_mirror(env, monkeypatch):
    home, _ = env
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(wl.WeightsDownloadError) as info:
        kl.MobileNet(alpha=0.25, weights="imagenet")
    message = str(info.value)
    assert "http://127.0.0.1:9/mobilenet_2_5_224_tf.h5" in message
    assert str(home / "models" / "mobilenet_2_5_224_tf.h5") in message
    assert wl.MIRROR_ENV in message
    assert not (home / "models").exists() or not list((home / "models").iterdir())


def test_bad_classes_and_unpublished_variant_errors():
    with pytest.raises(ValueError, match="Received: classes=10"):
        kl.MobileNetV3Large(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="Variants with weights"):
        wl.load_imagenet(kl.MobileNetV2(weights=None), "MobileNetV2", {"alpha": 0.9}, True)


def test_truncated_or_foreign_files_raise_value_error_naming_them(tmp_path):
    model = kl.MobileNetV2(weights=None, alpha=0.35, include_top=False)
    bad = tmp_path / "junk.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match="junk.h5"):
        wl.load_file(model, bad)
    other = tmp_path / "other.h5"
    write_keras_h5(kl.MobileNetV2(weights=None, alpha=1.0, include_top=False), other)
    with pytest.raises(ValueError, match="other.h5"):
        wl.load_file(model, other)
    pth = tmp_path / "foreign.pth"
    pth.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="foreign.pth"):
        wl.load_file(model, pth)


def test_full_h5_file_loads_into_a_model_without_top(tmp_path):
    """A full model's legacy `.h5` (backbone + head) loads into `include_top=False` by name."""
    full = harness.randomize(kl.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3)))
    path = tmp_path / "fine_tuned.h5"
    write_keras_h5(full, path)
    backbone = kl.MobileNetV2(weights=str(path), alpha=0.35, include_top=False,
                              input_shape=(64, 64, 3), pooling="avg")
    weighted = [layer for layer in backbone.layers if layer.weights]
    assert len(weighted) == len([la for la in full.layers if la.weights]) - 1  # the head
    for layer in weighted:
        for mine, theirs in zip(layer.get_weights(), full.get_layer(layer.name).get_weights(),
                                strict=True):
            np.testing.assert_array_equal(mine, theirs)
    # A file that lacks some of the model's layers still fails, naming the file.
    with pytest.raises(ValueError, match="fine_tuned.h5"):
        kl.MobileNetV2(weights=str(path), alpha=0.5, include_top=False)


# -- the real MobileNet 0.25 file ---------------------------------------------------------


def test_real_mobilenet_025_through_imagenet_mirror(env, monkeypatch):
    home, served = env
    source = shared_file(WEIGHTS / "mobilenet_1_0.25_224_keras.h5")
    os.symlink(source, served / "mobilenet_2_5_224_tf.h5")
    x, y = sample_photos(224)
    x = kl.models.mobilenet.preprocess_input(x)
    with http_server(served) as url:
        monkeypatch.setenv(wl.MIRROR_ENV, url)
        model = kl.MobileNet(alpha=0.25, weights="imagenet")
    ref = keras.applications.MobileNet(alpha=0.25, weights=str(source))
    ours = float((model.predict(x, batch_size=50, verbose=0).argmax(1) == y).mean())
    theirs = float((ref.predict(x, batch_size=50, verbose=0).argmax(1) == y).mean())
    print(f"top-1 on the sample: weights='imagenet' {ours:.3f}, keras.applications {theirs:.3f}")
    assert abs(ours - theirs) <= 0.005 and ours > 0.5
    # Second load: offline, from the cache.
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    again = kl.MobileNet(alpha=0.25, weights="imagenet")
    np.testing.assert_array_equal(again.get_weights()[0], model.get_weights()[0])


# -- .pth reading -------------------------------------------------------------------------


def test_pth_reader_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"conv.weight": Exploit()}, protocol=2)
    for layout in ("zip", "legacy"):
        path = tmp_path / f"evil_{layout}.pth"
        if layout == "zip":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("evil/data.pkl", payload)
                z.writestr("evil/version", "3\n")
        else:
            buf = io.BytesIO()
            for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                pickle.dump(obj, buf, protocol=2)
            buf.write(payload)
            path.write_bytes(buf.getvalue())
        with pytest.raises(ValueError, match="Refusing to load (posix|os).system"):
            wl.load_state_dict(path)
        assert not marker.exists()


def test_pth_reader_matches_torch_for_both_layouts(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "a.weight": torch.randn(4, 3, 3, 3),
        "a.bias": torch.randn(4).half(),
        "bn.num_batches_tracked": torch.tensor(7),
        "strided": torch.randn(5, 8)[:, ::2],
        "bf16": torch.randn(6).bfloat16(),
    }
    for new in (True, False):
        path = tmp_path / f"s_{new}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=new)
        loaded = wl.load_state_dict(path)
        assert list(loaded) == list(state)
        for k, v in state.items():
            expected = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
            np.testing.assert_array_equal(loaded[k].astype(expected.dtype), expected)


# -- installation and concurrency ---------------------------------------------------------


def test_wheel_ships_manifest_and_class_index(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("keras_lightnets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_lightnets/weights_manifest.json" in names
    assert "keras_lightnets/data/imagenet_class_index.json" in names
    shipped = json.loads(zipfile.ZipFile(wheel).read("keras_lightnets/weights_manifest.json"))
    assert shipped == json.loads((ROOT / "weights_manifest.json").read_text())


_LOAD_SCRIPT = """
import sys
import keras_lightnets as kl
model = kl.MobileNetV2(weights="imagenet", alpha=0.35, include_top=False,
                       input_shape=(96, 96, 3))
print("loaded", model.count_params())
"""


def test_two_processes_loading_at_once_both_succeed(env, tmp_path):
    home, served = env
    ref = keras.applications.MobileNetV2(weights=None, alpha=0.35, include_top=False,
                                         input_shape=(96, 96, 3))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    write_keras_h5(ref, served / name)
    with http_server(served) as url:
        env_vars = {**os.environ, "KERAS_HOME": str(home), wl.MIRROR_ENV: url,
                    "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-c", _LOAD_SCRIPT], env=env_vars,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "loaded" in out
    files = sorted(p.name for p in (home / "models").iterdir())
    assert files == [name, name + ".sha256"]  # no part file left; the unhashed file recorded
    recorded = (home / "models" / (name + ".sha256")).read_text().split()[0]
    assert recorded == sha256(home / "models" / name) == sha256(served / name)


# -- torchvision files ---------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("scheme", ["http", "file"])
def test_torchvision_pth_through_mirror_reproduces_torchvision(env, monkeypatch, scheme):
    from conftest import import_torchvision, randomize_torch_bn

    torch, tvm = import_torchvision()
    home, served = env
    tv = randomize_torch_bn(tvm.shufflenet_v2_x0_5(), seed=3)
    name = "shufflenetv2_x0.5-f707e7126e.pth"
    torch.save(tv.state_dict(), served / name)
    use_hashes(monkeypatch, **{name: sha256(served / name)})
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(http_server(served)) if scheme == "http" else served.as_uri()
        monkeypatch.setenv(wl.MIRROR_ENV, url)
        model = kl.ShuffleNetV2(alpha=0.5, weights="imagenet", classifier_activation=None)
        headless = kl.ShuffleNetV2(alpha=0.5, weights="imagenet", include_top=False,
                                   pooling="avg")
    mean = np.array(kl.imagenet.TORCH_MEAN, "float32")
    std = np.array(kl.imagenet.TORCH_STD, "float32")
    xt = torch.from_numpy(((x / 255 - mean) / std).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        expected = tv(xt).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4)
    assert headless.output.shape == (None, 1024)
    converted = sorted(p.name for p in (home / "keras_lightnets").iterdir())
    assert len(converted) == 2 and all(n.endswith(".weights.h5") for n in converted)
    # Second load: offline, from the converted cache, same numbers.
    monkeypatch.setenv(wl.MIRROR_ENV, "http://127.0.0.1:9")
    again = kl.ShuffleNetV2(alpha=0.5, weights="imagenet", classifier_activation=None)
    np.testing.assert_allclose(np.asarray(again(x)), expected, atol=1e-4)


def test_unpublished_variants_list_the_ones_that_exist():
    with pytest.raises(ValueError, match="Variants with weights: .*ShuffleNetV2\\(alpha=0.5"):
        kl.ShuffleNetV2(alpha=0.33, weights="imagenet")
    with pytest.raises(ValueError, match="no published ImageNet weights|Variants with weights"):
        kl.ShuffleNetV1(weights="imagenet")


@pytest.mark.torch
def test_real_squeezenet_caffe_weights_as_pth_through_path(tmp_path):
    from conftest import import_torchvision
    from test_squeezenet_mnasnet import CAFFE_BGR_MEAN, _caffe_state_dict

    path = shared_file(WEIGHTS / "squeezenet_v1.1_caffe_fp32.npz")
    torch, tvm = import_torchvision()
    from torchvision.models.squeezenet import Fire

    with np.load(path) as npz:
        state = _caffe_state_dict(npz, torch, tvm.squeezenet1_1(), Fire)
    pth = tmp_path / "squeezenet1_1_caffe.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
    kwargs = dict(version="1.1", include_preprocessing=False, input_shape=(227, 227, 3))
    model = kl.SqueezeNet(weights=str(pth), **kwargs)
    direct = kl.SqueezeNet(weights=None, **kwargs)
    wl.load_torch_state_dict(direct, state)
    for got, want in zip(model.weights, direct.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    # The wiring of these weights on all sample photos: test_squeezenet_mnasnet.
    x, y = sample_photos(227)
    x = np.ascontiguousarray(x[:100, ..., ::-1])
    x -= CAFFE_BGR_MEAN
    p = model.predict(x, batch_size=50, verbose=0)
    np.testing.assert_allclose(p, direct.predict(x, verbose=0), atol=1e-6)
    assert (p.argmax(1) == y[:100]).mean() > 0.6
