"""Captures the converters' native log (fd 2), the only explanation of a failed conversion."""

import contextlib
import os
import sys
import tempfile
import warnings


class Captured:
    def __init__(self):
        self.text = ""

    def tail(self, lines=12):
        kept = [line for line in self.text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


@contextlib.contextmanager
def native_stderr():
    """Redirects fd 2 (and Python warnings) into a `Captured` while active."""
    captured = Captured()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to capture
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            captured.text = log.read().decode("utf-8", "replace")
