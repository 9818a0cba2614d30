"""Atomic publication of export artifacts.

An artifact is written and verified under a hidden temporary name next to it, then renamed
over the final name, so a crash or failed verification never leaves a partial file there.
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile

from keras_lightnets import _files
from keras_lightnets._utils import check

# `.<name>.tmp-<pid>-<random>` (`.old-`: a replaced SavedModel); without a pid, by age.
_STAGED = re.compile(r"^\..+\.(?:tmp|old)-(?:(\d+)-)?[a-z0-9_]{8}$")
STALE_SECONDS = _files.STALE_SECONDS


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def staged(path, directory=False):
    """Yields a temporary path next to `path` (same file system: `os.replace` is atomic),
    a directory name for a SavedModel; publishes it on success, else removes it."""
    path = check_destination(path, directory)
    parent = os.path.dirname(path)
    remove_stale(parent)
    prefix = f".{os.path.basename(path)}.tmp-{os.getpid()}-"
    try:
        if directory:
            tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
            # Writers (tf.saved_model.save) want to create the directory themselves.
            os.rmdir(tmp)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, dir=parent)
            os.close(fd)
    except OSError as exc:
        raise _unwritable(parent, exc) from None
    try:
        yield tmp
        publish(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        raise _unwritable(parent, exc) from None
    finally:
        _remove(tmp)


def _unwritable(parent, exc):
    from keras_lightnets.export.verify import ExportError

    return ExportError(f"Cannot write the export into {parent!r}: "
                       f"{exc.strerror or exc}.")


def remove_stale(folder):
    """Removes temporaries that killed exports left in `folder`."""
    _files.remove_stale(folder, _STAGED)


def check_destination(path, directory=False):
    """The absolute destination path (its folder made). A file never replaces a directory,
    a SavedModel only an empty directory or a SavedModel: a typo cannot delete data."""
    check(isinstance(path, (str, os.PathLike)) and os.fspath(path),
          "`path` must be a file system path.", path=path)
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    check(not os.path.lexists(parent) or os.path.isdir(parent),
          f"The folder to write into is not a directory: {parent!r}.", path=path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"The folder to write into cannot be created ({exc.strerror}): "
                         f"{parent!r}. Received: path={path!r}") from None
    check(os.access(parent, os.W_OK | os.X_OK),
          f"The folder to write into is not writable: {parent!r}.", path=path)
    check(directory or not os.path.isdir(path),
          "`path` is an existing directory, not a file name.", path=path)
    check(not directory or not os.path.lexists(path) or os.path.isdir(path) and (
        not os.listdir(path) or os.path.isfile(os.path.join(path, "saved_model.pb"))),
        "`path` exists and is neither an empty directory nor a SavedModel; refusing to "
        "replace it.", path=path)
    return path


def publish(tmp, path):
    """Moves the finished artifact `tmp` to `path`, replacing what is there."""
    if not os.path.isdir(tmp):
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes private (0600) files; give the artifact the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        return
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    # No rename replaces a non-empty directory: the old one moves aside first, never partial.
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-{os.getpid()}-",
                           dir=os.path.dirname(path))
    os.rmdir(old)
    os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def size_of(path):
    """Bytes of a file, or of every file under a directory."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)
