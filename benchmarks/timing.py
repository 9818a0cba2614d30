"""Timing and file-making pieces shared by the benchmark scripts (`run.py`, `front.py`).

Files are timed side by side: every file once per round, in a new order each
round (`interleave`), each through several runtime instances used in turn and
made in alternating order (`made_in_turns`); a file's latency is the median
over rounds. Models get random weights shaped like trained ones
(`trained_like`): latency does not depend on the values, int8 files do.
"""

import itertools
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time

import numpy as np

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
# Runtime instances (interpreters, sessions) per file, timed in turn; even, so that
# `made_in_turns` makes as many of each file early as late.
INSTANCES = 4


class Runner:
    """One timed measurement: `call()` runs one inference (or training step)."""

    def __init__(self, variant, source, kind, call, items=1):
        self.variant, self.source, self.kind = variant, source, kind
        self.call, self.items = call, items
        self.times = []

    @property
    def median_ms(self):
        return 1000 * statistics.median(self.times) if self.times else None


def interleave(runners, runs, warmup, seed=0):
    """Runs every runner once per round, `warmup` untimed rounds first.

    The order changes every round (seeded), so that no file always runs right
    after the same neighbour (cache state, frequency changes) or in the same
    part of a round.
    """
    order = list(runners)
    rng = random.Random(seed)
    for r in range(warmup + runs):
        rng.shuffle(order)
        for runner in order:
            start = time.perf_counter()
            runner.call()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                runner.times.append(elapsed)


def in_turn(calls):
    """One call that runs `calls` in turn: a runtime instance's buffer placement moves
    its latency by as much as the margins of the tightest targets, so each file's time
    is spread over several instances (investigations/FINDINGS.md)."""
    turn = itertools.cycle(calls)
    return lambda: next(turn)()


def made_in_turns(makers, instances=INSTANCES):
    """`[in_turn(calls)]` per maker (each makes one runtime instance's call), making
    instance i of every maker before instance i + 1 of any, in alternating order.

    Where an instance lies in memory moves its latency: of two identical files,
    the one whose interpreters were made first ran consistently slower
    (investigations/FINDINGS.md).
    """
    calls = [[] for _ in makers]
    order = list(range(len(makers)))
    for i in range(instances):
        for j in order if i % 2 == 0 else reversed(order):
            calls[j].append(makers[j]())
    return [in_turn(c) for c in calls]


def tflite_instance(path, threads):
    """One interpreter of a TFLite file (ai-edge-litert, XNNPACK): a call running one
    inference."""
    from keras_lightnets.export import tflite

    interp = tflite.interpreter(str(path), num_threads=threads)
    detail = interp.get_input_details()[0]
    x = np.zeros(detail["shape"], dtype=detail["dtype"])

    def call():
        interp.set_tensor(detail["index"], x)
        interp.invoke()

    return call


def paired_ratio(times_a, times_b):
    """Median over rounds of a / b timed in the same round (what the machine did in
    between weighs on both), or the ratio of medians when not timed together."""
    if times_a and times_b and len(times_a) == len(times_b):
        return statistics.median(x / y for x, y in zip(times_a, times_b, strict=True))
    if not times_a or not times_b:
        return None
    return statistics.median(times_a) / statistics.median(times_b)


def matmul_peak_gmacs(threads=None, n=2048, repeats=5):
    """Measured float32 matmul peak (GMAC/s), optionally in a 1-thread subprocess."""
    if threads == 1:
        code = (
            "import numpy as np, time\n"
            f"a = np.ones(({n}, {n}), 'float32'); a @ a\n"
            "best = float('inf')\n"
            f"for _ in range({repeats}):\n"
            "    s = time.perf_counter(); a @ a; best = min(best, time.perf_counter() - s)\n"
            f"print({n} ** 3 / best / 1e9)\n"
        )
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        return float(out.stdout.strip())
    a = np.ones((n, n), "float32")
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_text(start, end):
    """The 1-minute load averages of a run, as the tables print them."""
    return "n/a" if start is None else f"{start:.2f} at the start, {end:.2f} at the end"


# -- building the files -------------------------------------------------------------------


def calibration_images(size, count=32):
    """Real photos when ../shared is there (raw 0-255 RGB), else smooth noise."""
    from PIL import Image

    folder = SHARED / "data" / "imagenet-sample" / "jpeg"
    files = sorted(folder.glob("*.JPEG"))[:count] if folder.is_dir() else []
    if files:
        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size)),
                                    dtype="float32") for f in files])
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (count, size, size, 3)).astype("float32")


def model_domain(model, images, preprocess):
    from keras_lightnets.export import expects_raw_pixels

    return images if expects_raw_pixels(model) else np.asarray(preprocess(images.copy()))


def trained_like(model, images, preprocess, count=16):
    """Gives `model` weights shaped like trained ones, in place; returns its input data.

    Latency does not depend on weight values, but int8 files do: untouched
    initial weights give near-constant activations, which fail int8
    verification and make XNNPACK refuse int8 ADD/MUL ops whose scales are too
    far apart. Batch-norm scales and offsets are drawn around 1 and 0 and the
    moving statistics are measured on the first `count` calibration images
    (`trained_weights.trained_like`).
    """
    from trained_weights import trained_like as randomize

    data = model_domain(model, images, preprocess)
    randomize(model, data[:count])
    return data


def write_file(notes, strict, fn, *args, **kwargs):
    """`fn(*args, **kwargs).path` (an export); a file whose verification fails is
    written unverified and noted, unless `strict` and the file is not int8.

    Our float files must reproduce the model (export verification). An int8
    file, or a peer's file, that does not is still timed and the failure is
    noted: with random weights the int8 agreement says little (tests/
    test_export.py and test_optimize.py check it on real photos).
    """
    from keras_lightnets.export.verify import ExportVerificationError

    try:
        return fn(*args, **kwargs).path
    except ExportVerificationError as exc:
        if strict and "int8" not in args:
            raise
        notes.append(f"{pathlib.Path(args[1]).name}: {str(exc).split(';')[0]}")
        return fn(*args, **{**kwargs, "verify": False}).path


def tflite_files(model, prefix, data, calibration, notes, strict=True, **int8_options):
    """The float32 and post-training int8 TFLite files of a Keras model, batch 1,
    through `keras_lightnets.export`: `{"tflite_fp32": path, "tflite_int8": path}`.
    `int8_options` go to the int8 export (`verify`, `adaptive_rounding`)."""
    from keras_lightnets import export

    return {"tflite_fp32": write_file(notes, strict, export.to_tflite, model,
                                      f"{prefix}_fp32.tflite", verify_data=data[:4]),
            "tflite_int8": write_file(notes, strict, export.to_tflite, model,
                                      f"{prefix}_int8.tflite", "int8",
                                      representative_data=calibration, progress=False,
                                      **int8_options)}
