"""Small helpers any part of the package may import (this module imports none of it).

Error messages end `Received: arg=value`, as keras.applications' do.
"""


def received(message, **kwargs):
    """`message` followed by ` Received: k=v` for each keyword."""
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{message} Received: {shown}"


def check(condition, message, **kwargs):
    """Raises `ValueError(received(message, **kwargs))` unless `condition`."""
    if not condition:
        raise ValueError(received(message, **kwargs))



def one_line(text):
    """`text` with every run of white space, newlines included, as one space."""
    return " ".join(str(text).split())
