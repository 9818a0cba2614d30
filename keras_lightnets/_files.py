"""Temporary files that a killed process left behind."""

import os
import shutil
import time

# A temporary older than this is stale even if its process id is in use
# again (ids are reused).
STALE_SECONDS = 24 * 3600


def pid_alive(pid):
    """Whether process `pid` exists on this machine (True where that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # signal 0 is only a probe on POSIX
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists, owned by another user
        return True
    return True


def remove_stale(folder, pattern):
    """Removes the temporaries in `folder` whose names match `pattern`.

    `pattern` (a compiled regex) captures the writer's process id as its first
    group, if the name has one; a temporary is stale when that process is gone
    or when it is older than `STALE_SECONDS`.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = pattern.search(name)
        if match is None:
            continue
        path = os.path.join(folder, name)
        try:
            old = now - os.lstat(path).st_mtime > STALE_SECONDS
        except OSError:
            continue
        pid = match.group(1)
        if old or (pid is not None and not pid_alive(int(pid))):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    pass
