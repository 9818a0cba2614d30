"""Download, verification and caching of published weight files.

Files are fetched with `keras.utils.get_file` (progress bar, Keras cache
directory, `KERAS_HOME` honoured) under a name private to the process, checked
against the publisher's hash, then renamed into place: a partial or corrupt
download never sits under the final name, and two processes fetching the same
file at once both end with the same complete file.
"""

import hashlib
import os
import uuid

MIRROR_ENV = "KERAS_LIGHTNETS_WEIGHTS_MIRROR"
CACHE_SUBDIR = "models"
CONVERTED_SUBDIR = "keras_lightnets"


class WeightsDownloadError(OSError):
    """A weights file could not be fetched; the message says what to do."""


def cache_root():
    """The Keras cache directory (`KERAS_HOME`, else `~/.keras`)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def cached_path(entry):
    """Where the entry's file lives once downloaded (or placed by hand)."""
    return os.path.join(cache_root(), CACHE_SUBDIR, entry["file"])


def source_url(entry):
    """The publisher's URL, or the mirror's when `KERAS_LIGHTNETS_WEIGHTS_MIRROR` is set."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + entry["file"]
    return entry["url"]


def file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_ok(path, expected):
    """Whether `path` matches the entry's hash (no hash published: True)."""
    if not expected:
        return True
    actual = file_digest(path, expected["algorithm"])
    if expected.get("prefix"):
        return actual.startswith(expected["value"])
    return actual == expected["value"]


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fetch(entry):
    """Local path of the entry's file, downloading and verifying it if needed."""
    import keras

    final = cached_path(entry)
    if os.path.isfile(final):
        if hash_ok(final, entry.get("hash")):
            return final
        # A stale or damaged cached copy is replaced, never loaded.
        _remove(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    url = source_url(entry)
    part = f"{entry['file']}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    part_path = os.path.join(os.path.dirname(final), part)
    try:
        keras.utils.get_file(part, origin=url, cache_dir=cache_root(), cache_subdir=CACHE_SUBDIR)
    except BaseException as exc:
        _remove(part_path)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise WeightsDownloadError(
            f"Could not download {entry['file']} from {url} ({exc}). Without network access, "
            f"place the file by hand at {final}, or set {MIRROR_ENV} to a base URL (http:// or "
            f"file://) that serves {entry['file']}."
        ) from None
    expected = entry.get("hash")
    if not hash_ok(part_path, expected):
        actual = file_digest(part_path, expected["algorithm"])
        _remove(part_path)
        raise ValueError(
            f"The file downloaded from {url} does not match the published "
            f"{expected['algorithm']} {expected['value']}; it was deleted and nothing was "
            f"loaded. Received: {expected['algorithm']}={actual}"
        )
    os.replace(part_path, final)
    return final


def converted_path(entry, include_top):
    """Cache path of a torchvision file converted to Keras `.weights.h5`."""
    key = (entry.get("hash") or {}).get("value") or file_digest(cached_path(entry), "sha256")[:16]
    stem = os.path.splitext(entry["file"])[0]
    top = "top" if include_top else "notop"
    return os.path.join(cache_root(), CONVERTED_SUBDIR, f"{stem}-{key}-{top}.weights.h5")


def save_weights_atomically(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    part = f"{path[: -len('.weights.h5')]}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}.weights.h5"
    try:
        model.save_weights(part)
        os.replace(part, path)
    finally:
        _remove(part)
