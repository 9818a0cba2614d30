"""Download, verification and caching of published weight files.

Files are streamed with urllib (http, https, file://) into a name private to
the process, `<file>.part-<pid>-<id><ext>` in the cache folder, with a connect
and per-read timeout (`KERAS_LIGHTNETS_DOWNLOAD_TIMEOUT` seconds, default
`DEFAULT_TIMEOUT`), a size cap, and the received length checked against
`Content-Length`. The part file is then checked against the publisher's hash
and loaded into the model being built; only a file that loads is renamed into
place, so a truncated body or a proxy's HTML page is never cached. Part files
left by a killed process are removed by the next download into that folder.

The cache keeps Keras' layout, `<KERAS_HOME or ~/.keras>/models/<file>`, with
no fallback to another folder. Files without a publisher hash (`hash: null` in
the manifest) are trusted on first use: the sha256 of the first file that
loads is recorded next to it, in `<file>.sha256` (`sha256sum` format, then the
file's size and mtime, so that an unchanged file is not hashed again), and a
cached or downloaded file that differs from it later is refused.

Entries with `url: null` are not downloadable by a program (their publisher
gives no direct link): the file is used when it is in the cache or under the
mirror, and otherwise the error says where to get it (the entry's `download`
text) and where to put it.
"""

import hashlib
import http.client
import os
import re
import urllib.request
import uuid
import warnings

from keras_lightnets import _files
from keras_lightnets._utils import one_line

MIRROR_ENV = "KERAS_LIGHTNETS_WEIGHTS_MIRROR"
TIMEOUT_ENV = "KERAS_LIGHTNETS_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
# Bodies larger than this are refused when the manifest gives no size.
MAX_DOWNLOAD_BYTES = 1 << 30
CACHE_SUBDIR = "models"
CONVERTED_SUBDIR = "keras_lightnets"
RECORD_SUFFIX = ".sha256"

_CHUNK = 1 << 20
_PART = re.compile(r"\.part-(\d+)-\w+")


class WeightsDownloadError(OSError):
    """A weights file could not be fetched; the message says what to do."""


def cache_root():
    """The Keras cache directory (`KERAS_HOME`, else `~/.keras`)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def cached_path(entry):
    """Where the entry's file lives once downloaded (or placed by hand)."""
    return os.path.join(cache_root(), CACHE_SUBDIR, entry["file"])


def record_path(entry):
    """Where the sha256 of an unhashed entry's first good file is recorded."""
    return cached_path(entry) + RECORD_SUFFIX


def source_url(entry):
    """The publisher's URL, or the mirror's when `KERAS_LIGHTNETS_WEIGHTS_MIRROR` is set;
    None for an entry downloadable only by hand, without a mirror."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + entry["file"]
    return entry.get("url")


def _by_hand_error(entry):
    final = cached_path(entry)
    where = entry.get("download") or "its publisher gives no direct download link"
    return WeightsDownloadError(
        f"{entry['file']} ({entry['family']}, weights={entry.get('weights', 'imagenet')!r}) "
        f"cannot be downloaded automatically: {where.rstrip('.')}. Download it by hand and "
        f"place it at {final}, or set {MIRROR_ENV} to a base URL (http:// or file://) that "
        f"serves {entry['file']}."
    )


def download_timeout():
    """Connect and per-read timeout in seconds (`KERAS_LIGHTNETS_DOWNLOAD_TIMEOUT`)."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:  # also refuses nan
        raise ValueError(
            f"{TIMEOUT_ENV} must be a positive number of seconds. Received: {TIMEOUT_ENV}={value!r}"
        )
    return seconds


def size_cap(entry):
    """The largest body accepted for the entry."""
    size = entry.get("size")
    return 4 * size if size else MAX_DOWNLOAD_BYTES


def file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_ok(actual, expected):
    if expected.get("prefix"):
        return actual.startswith(expected["value"])
    return actual == expected["value"]


def hash_ok(path, expected):
    """Whether `path` matches the entry's hash (no hash published: True)."""
    if not expected:
        return True
    return _digest_ok(file_digest(path, expected["algorithm"]), expected)


def _stat_key(path):
    stat = os.stat(path)
    return f"{stat.st_size} {stat.st_mtime_ns}"


def read_record(entry):
    """`(sha256, stat key)` recorded for an unhashed entry's file, or `(None, None)`."""
    try:
        with open(record_path(entry), encoding="ascii") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    fields = lines[0].split() if lines else []
    stat = lines[1][len("# stat "):] if len(lines) > 1 and lines[1].startswith("# stat ") else None
    return (fields[0].lower() if fields else None), stat


def recorded_digest(entry, path):
    """The sha256 of `path`; not read again while its size and mtime are as recorded."""
    recorded, stat = read_record(entry)
    if recorded and stat == _stat_key(path):
        return recorded
    return file_digest(path, "sha256")


def write_record(entry, sha256):
    """Records `sha256` as the entry's trusted file; a failure only warns."""
    path = record_path(entry)
    part = f"{path}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(part, "w", encoding="ascii") as f:
            # The second line lets later loads skip hashing an unchanged file.
            f.write(f"{sha256}  {entry['file']}\n# stat {_stat_key(cached_path(entry))}\n")
        os.replace(part, path)
    except OSError as exc:
        remove_quietly(part)
        warnings.warn(f"Could not record the sha256 of {cached_path(entry)} in {path} ({exc}); "
                      f"a later change to the file will go unnoticed.", stacklevel=3)


def _changed_file_error(entry, recorded, actual):
    final, record = cached_path(entry), record_path(entry)
    return ValueError(
        f"The cached weights file {final} differs from the one first downloaded (sha256 "
        f"recorded in {record}) and was not loaded. Delete {final} and {record} to download "
        f"it again. Received: sha256={actual}, recorded={recorded}"
    )


def remove_quietly(path):
    """os.remove, when the file may already be gone."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_stale_parts(folder):
    """Removes part files whose process is gone or that are older than a day."""
    _files.remove_stale(folder, _PART)


def _open_part(entry):
    """A new part file in the cache folder, or a one-line error naming the folder."""
    final = cached_path(entry)
    folder = os.path.dirname(final)
    from keras_lightnets.weights import sources

    # The file's ending is kept so the loaders recognise its format: its source's own
    # (".pth.tar" is megvii's), else the extension.
    suffixes = getattr(sources.SOURCES.get(entry.get("source")), "suffixes", ())
    ext = next((s for s in suffixes if entry["file"].lower().endswith(s)),
               os.path.splitext(entry["file"])[1])
    part = os.path.join(folder, f"{entry['file']}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_parts(folder)
        return part, open(part, "xb")
    except OSError as exc:
        raise WeightsDownloadError(
            f"Cannot write to the weights cache folder {folder} ({exc.strerror or exc}). Set "
            f"KERAS_HOME to a writable folder (weights go to $KERAS_HOME/{CACHE_SUBDIR}), or "
            f"place {entry['file']} by hand at {final}."
        ) from None


def _stream(url, out, entry, timeout, digests):
    """Copies the body at `url` into the open file `out`, updating `digests`."""
    from keras.utils import Progbar

    cap = size_cap(entry)
    # The socket timeout bounds the connection and every read, so a stalled body fails.
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.strip().isdigit() else None
        if expected is not None and expected > cap:
            raise ValueError(f"the server announces {expected} bytes, over the {cap} byte cap")
        print(f"Downloading data from {url}", flush=True)
        progbar = Progbar(expected) if expected else None
        received = 0
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if received > cap:
                raise ValueError(f"the body exceeds the {cap} byte cap")
            out.write(chunk)
            for digest in digests:
                digest.update(chunk)
            if progbar is not None:
                progbar.update(min(received, expected))
    if expected is not None and received != expected:
        raise ValueError(f"received {received} of the {expected} bytes announced")


def _download_error(entry, url, reason):
    final = cached_path(entry)
    return WeightsDownloadError(
        f"Could not download {entry['file']} from {url} ({one_line(reason)}); nothing was cached. "
        f"Without network access, place the file by hand at {final}, or set {MIRROR_ENV} to "
        f"a base URL (http:// or file://) that serves {entry['file']}."
    )


def _download(entry, load):
    """Downloads, verifies and loads the entry's file, then moves it into the cache."""
    final, url, expected = cached_path(entry), source_url(entry), entry.get("hash")
    if url is None:
        raise _by_hand_error(entry)
    timeout = download_timeout()
    part, out = _open_part(entry)
    sha256 = hashlib.sha256()
    published = hashlib.new(expected["algorithm"]) if expected else None
    try:
        try:
            with out:
                _stream(url, out, entry, timeout,
                        [d for d in (sha256, published) if d is not None])
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise _download_error(entry, url, f"{type(exc).__name__}: {exc}") from None
        if expected and not _digest_ok(published.hexdigest(), expected):
            raise ValueError(
                f"The file downloaded from {url} does not match the published "
                f"{expected['algorithm']} {expected['value']}; it was deleted and nothing was "
                f"loaded. Received: {expected['algorithm']}={published.hexdigest()}"
            )
        recorded = None if expected else read_record(entry)[0]
        if recorded and recorded != sha256.hexdigest():
            raise ValueError(
                f"The file downloaded from {url} differs from the one first downloaded into "
                f"{final} (sha256 recorded in {record_path(entry)}); it was deleted and nothing "
                f"was loaded. Delete {record_path(entry)} to accept the new file. "
                f"Received: sha256={sha256.hexdigest()}, recorded={recorded}"
            )
        try:
            load(part, True)
        except ValueError as exc:
            raise _download_error(entry, url, f"not a loadable weights file: {exc}") from None
        os.replace(part, final)
    finally:
        remove_quietly(part)
    if not expected and not recorded:
        write_record(entry, sha256.hexdigest())
    return final


def _discard(entry, path, reason):
    """Deletes a cached file that must not be loaded, or says to delete it by hand."""
    try:
        remove_quietly(path)
    except OSError as exc:
        raise ValueError(
            f"The cached weights file {path} cannot be used ({reason}) nor deleted "
            f"({exc.strerror or exc}); delete it by hand. "
            f"Received: weights={entry.get('weights', 'imagenet')!r}"
        ) from None


def fetch(entry, load):
    """Local path of the entry's file, downloaded and verified if needed.

    `load(path, new)` loads the file into the model being built and raises
    ValueError for a file that is not what the entry describes; `fetch`
    calls it exactly once, on the cached file or, for a new download, on the
    part file before it is renamed into the cache. `new` is False for a
    cached file that matches its hash or recorded sha256: its content was
    checked when it entered the cache.
    """
    final = cached_path(entry)
    expected = entry.get("hash")
    if os.path.isfile(final):
        if expected:
            if hash_ok(final, expected):
                load(final, False)
                return final
            # A stale or damaged cached copy is replaced, never loaded.
            _discard(entry, final, f"it does not match the published {expected['algorithm']}")
        else:
            recorded, _ = read_record(entry)
            if recorded:
                actual = recorded_digest(entry, final)
                if actual != recorded:
                    raise _changed_file_error(entry, recorded, actual)
                load(final, False)
                return final
            try:
                load(final, True)
            except ValueError as exc:
                # Unrecorded (left by an older version, or placed by hand) and unreadable.
                warnings.warn(f"Deleting the unreadable cached weights file {final} and "
                              f"downloading it again: {exc}", stacklevel=3)
                _discard(entry, final, one_line(exc))
            else:
                write_record(entry, file_digest(final, "sha256"))
                return final
    return _download(entry, load)


def converted_path(entry, include_top, source=None):
    """Cache path of a state-dict source's file (torchvision) converted to `.weights.h5`."""
    key = (entry.get("hash") or {}).get("value")
    if not key:
        key = recorded_digest(entry, source or cached_path(entry))[:16]
    stem = os.path.splitext(entry["file"])[0]
    top = "top" if include_top else "notop"
    return os.path.join(cache_root(), CONVERTED_SUBDIR, f"{stem}-{key}-{top}.weights.h5")


def save_weights_atomically(model, path):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_parts(folder)
    part = f"{path[: -len('.weights.h5')]}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}.weights.h5"
    try:
        model.save_weights(part)
        os.replace(part, path)
    finally:
        remove_quietly(part)
