"""Atomic publication of export artifacts.

An artifact is written and verified under a hidden temporary name in the
destination directory, then renamed over the final name in one step, so a
crash, an interrupt or a failed verification never leaves a half-written or
unverified file under the name the caller asked for. The temporary name
carries the writer's process id (`.<name>.tmp-<pid>-<random>`): what a killed
export leaves behind is removed by the next export into the same folder.
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile

from keras_lightnets import _files

# `.<name>.tmp-<pid>-<random>` (`.old-` for a SavedModel being replaced); the
# older form without a pid is removed only by age.
_STAGED = re.compile(r"^\..+\.(?:tmp|old)-(?:(\d+)-)?[a-z0-9_]{8}$")
STALE_SECONDS = _files.STALE_SECONDS


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def staged(path, directory=False):
    """Yields a temporary path next to `path`; publishes it on success.

    Args:
        path: the final file or directory name.
        directory: whether the artifact is a directory (a SavedModel).

    The temporary name lives in the same directory as `path` (same file
    system, so the final `os.replace` is atomic). On an exception the
    temporary artifact is removed and `path` is left as it was.
    """
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
    """The absolute destination path (its folder made); refuses to replace a non-artifact.

    A file artifact never replaces a directory, and a SavedModel replaces only
    an empty directory or an earlier SavedModel, so a mistyped `path` cannot
    delete unrelated data.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`path` must be a file system path. Received: path={path!r}")
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise ValueError(f"The folder to write into is not a directory: {parent!r}. "
                         f"Received: path={path!r}")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"The folder to write into cannot be created ({exc.strerror}): "
                         f"{parent!r}. Received: path={path!r}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"The folder to write into is not writable: {parent!r}. "
                         f"Received: path={path!r}")
    if not directory and os.path.isdir(path):
        raise ValueError(
            f"`path` is an existing directory, not a file name. Received: path={path!r}")
    if directory and os.path.lexists(path):
        ok = os.path.isdir(path) and (
            not os.listdir(path) or os.path.isfile(os.path.join(path, "saved_model.pb"))
        )
        if not ok:
            raise ValueError(
                "`path` exists and is neither an empty directory nor a SavedModel; "
                f"refusing to replace it. Received: path={path!r}"
            )
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
    # A directory cannot replace a non-empty one in one rename: move the old
    # one aside first, so `path` is missing for an instant but never partial.
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
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
