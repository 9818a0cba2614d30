"""Entry point of the `keras-lightnets` command.

It lives outside the package so that TensorFlow's start-up chatter on stderr
(C++ INFO lines that no environment variable silences in TF 2.21) can be
hidden while `keras_lightnets` is imported; errors raised by the import are
shown as usual.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        from keras_lightnets import cli
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
