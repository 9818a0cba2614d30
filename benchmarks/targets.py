"""The benchmark targets, in one table: every script reads its bounds from here.

benchmarks/README.md's table of targets mirrors this one, with the recorded
ratios; tests/test_benchmarks.py checks that the two agree.
"""

import operator

# Columns: key, comparison, bound, what is compared. A ratio is ours over the
# reference's latency, or our throughput over the reference's for training.
TARGETS = {
    "float32_vs_keras_applications": (
        "<=", 1.02, "float32 TFLite latency vs keras.applications' file"),
    "int8_vs_google": (
        "<=", 1.05, "int8 MobileNetV2 TFLite latency vs Google's int8 file"),
    "shufflenet_v2_vs_mobilenet_v2": (
        "<=", 0.6, "ShuffleNetV2 1.0 vs MobileNetV2 1.0 float32 TFLite latency, both taking "
        "normalized pixels"),
    "onnx_vs_torchvision": (
        "<=", 1.05, "ONNX Runtime latency vs torchvision's export"),
    "training_throughput": (
        ">=", 0.95, "MobileNetV2 Keras training throughput vs keras.applications'"),
    "int8_vs_float32": (
        "<=", 0.6, "int8 vs float32 TFLite latency of the same model"),
    # front.py: a gain in top-1 points, not a ratio.
    "front_top1_gain": (
        ">=", 3.0, "published top-1 gain of the package's best weight set no slower (float32 "
        "TFLite, 1 thread) than each keras.applications MobileNet"),
    "int8_not_slower": (
        "<=", 1.0, "int8 vs float32 TFLite latency of every architecture of the front"),
}
_COMPARE = {"<=": operator.le, ">=": operator.ge}


def bound(key):
    """The target's bound, a number."""
    return TARGETS[key][1]


def text(key):
    """The target as `"<= 1.02"`."""
    comparison, value, _ = TARGETS[key]
    return f"{comparison} {value}"


def met(key, ratio):
    """Whether `ratio` meets the target."""
    comparison, value, _ = TARGETS[key]
    return _COMPARE[comparison](ratio, value)
