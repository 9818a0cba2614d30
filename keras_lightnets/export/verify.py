"""Numerical verification of exported artifacts against the Keras model.

Float artifacts must match the model to a relative difference of 1e-4
(float16 weights: 1e-2), where the relative difference is the largest
absolute difference divided by the largest absolute reference output.
Quantized artifacts (int8, dynamic range) are compared by the mean cosine
similarity of their dequantized outputs with the float outputs (>= 0.95),
and, when labelled data is given, by top-1 agreement with the float model
(>= 0.95).
"""

import dataclasses

import numpy as np

# Default tolerances, per kind of artifact: ("rel", max relative difference)
# or ("cosine", min mean cosine similarity).
TOLERANCES = {
    "float32": ("rel", 1e-4),
    "float16": ("rel", 1e-2),
    "dynamic": ("cosine", 0.95),
    "int8": ("cosine", 0.95),
}
MIN_TOP1_AGREEMENT = 0.95


class ExportError(RuntimeError):
    """An export that could not be converted or written."""


class ExportVerificationError(ExportError):
    """The exported artifact does not reproduce the Keras model.

    `report` holds the measured differences; nothing was written under the
    requested path.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how closely it reproduces the model.

    Attributes:
        path: the artifact (a file, or a directory for a SavedModel).
        format: "saved_model", "tflite" or "onnx".
        size_bytes: size on disk.
        ops: sorted op names of the artifact (TFLite builtins, ONNX op types,
            TensorFlow ops).
        quantization: None, "float16", "dynamic" or "int8".
        inputs, outputs: per tensor `{"name", "shape", "dtype"}` plus
            `"scale"` and `"zero_point"` for quantized tensors.
        verified: whether the artifact was run and compared.
        samples: how many inputs the comparison used.
        max_abs_diff, max_rel_diff: largest absolute difference with the
            Keras outputs, and that divided by the largest absolute output.
        cosine, min_cosine: mean and smallest per-sample cosine similarity
            of (dequantized) outputs with the Keras outputs.
        top1_agreement: fraction of samples whose arg-max matches the Keras
            model (classifier outputs only).
        top1_ties: samples whose artifact output has two or more classes at
            its maximum (a quantized output cannot order classes closer than
            one step; the arg-max then takes the lowest index).
        top1_agreement_with_ties: fraction of samples where the two outputs
            share a top class, counting every class tied at the top (never
            below `top1_agreement`; only reported, not checked).
        top1_accuracy, reference_top1_accuracy: accuracy of the artifact and
            of the Keras model, when labels were given.
        tolerance: the check applied, e.g. `"max_rel_diff <= 0.0001"`.
        gpu_compatible: TFLite only, the TFLite analyzer's verdict on the
            GPU delegate.
        max_tensor_rank: TFLite only, the largest tensor rank in the graph.
    """

    path: str
    format: str
    size_bytes: int
    ops: tuple = ()
    quantization: str = None
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    verified: bool = False
    samples: int = 0
    max_abs_diff: float = None
    max_rel_diff: float = None
    cosine: float = None
    min_cosine: float = None
    top1_agreement: float = None
    top1_ties: int = None
    top1_agreement_with_ties: float = None
    top1_accuracy: float = None
    reference_top1_accuracy: float = None
    tolerance: str = None
    gpu_compatible: bool = None
    max_tensor_rank: int = None

    def as_dict(self):
        return dataclasses.asdict(self)

    def summary(self):
        """A few human-readable lines."""
        kind = self.format + (f" ({self.quantization})" if self.quantization else "")
        lines = [f"{kind}: {self.path} ({self.size_bytes / 2**20:.2f} MiB)"]
        for label, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                quant = (f", scale={t['scale']:.6g}, zero_point={t['zero_point']}"
                         if "scale" in t else "")
                lines.append(f"  {label} {t['name']}: {tuple(t['shape'])} {t['dtype']}{quant}")
        lines.append(f"  ops ({len(self.ops)}): {', '.join(self.ops)}")
        if self.gpu_compatible is not None:
            lines.append(f"  GPU delegate compatible: {self.gpu_compatible}; "
                         f"max tensor rank {self.max_tensor_rank}")
        if self.verified:
            parts = [f"max rel diff {self.max_rel_diff:.3g}", f"cosine {self.cosine:.6f}"]
            if self.top1_agreement is not None:
                parts.append(f"top-1 agreement {self.top1_agreement:.3f}")
            if self.top1_ties:
                parts.append(f"{self.top1_ties} outputs tied at the top (agreement "
                             f"{self.top1_agreement_with_ties:.3f} counting ties)")
            if self.top1_accuracy is not None:
                parts.append(f"top-1 {self.top1_accuracy:.3f} "
                             f"(Keras {self.reference_top1_accuracy:.3f})")
            lines.append(f"  verified on {self.samples} inputs: {', '.join(parts)} "
                         f"[{self.tolerance}]")
        else:
            lines.append("  not verified")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _cosines(reference, actual):
    ref = reference.reshape(len(reference), -1).astype("float64")
    act = actual.reshape(len(actual), -1).astype("float64")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1)
    dots = (ref * act).sum(axis=1)
    # Two all-zero outputs agree perfectly.
    return np.where(norms > 0, dots / np.maximum(norms, 1e-300),
                    np.where(np.abs(ref).sum(1) + np.abs(act).sum(1) == 0, 1.0, 0.0))


def _at_max(outputs):
    return outputs == outputs.max(1, keepdims=True)


def measure(reference, actual, labels=None):
    """Differences between lists of reference and artifact outputs."""
    if len(reference) != len(actual):
        raise ExportError(f"The artifact has {len(actual)} outputs, the model "
                          f"{len(reference)}.")
    abs_diff, scale, cosines = 0.0, 0.0, []
    for ref, act in zip(reference, actual, strict=True):
        if ref.shape != act.shape:
            raise ExportError(f"Output shape {act.shape} of the artifact differs from the "
                              f"model's {ref.shape}.")
        abs_diff = max(abs_diff, float(np.max(np.abs(ref - act))) if ref.size else 0.0)
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
        cosines.append(_cosines(ref, act))
    cosines = np.min(np.stack(cosines), axis=0)
    result = {
        "samples": int(len(reference[0])),
        "max_abs_diff": abs_diff,
        "max_rel_diff": abs_diff / scale if scale > 0 else abs_diff,
        "cosine": float(np.mean(cosines)),
        "min_cosine": float(np.min(cosines)),
    }
    first_ref, first_act = reference[0], actual[0]
    if first_ref.ndim == 2 and first_ref.shape[1] > 1:
        ref_top, act_top = first_ref.argmax(1), first_act.argmax(1)
        result["top1_agreement"] = float(np.mean(ref_top == act_top))
        ref_max, act_max = _at_max(first_ref), _at_max(first_act)
        result["top1_ties"] = int(np.sum(act_max.sum(1) > 1))
        result["top1_agreement_with_ties"] = float(np.mean((ref_max & act_max).any(1)))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            result["top1_accuracy"] = float(np.mean(act_top == labels))
            result["reference_top1_accuracy"] = float(np.mean(ref_top == labels))
    return result


def check(report, kind, tolerance=None, labelled=False, min_top1_agreement=None):
    """Raises `ExportVerificationError` when `report` is out of tolerance.

    Args:
        report: an `ExportReport` with the measured fields filled in.
        kind: a key of `TOLERANCES`.
        tolerance: overrides the default bound of `kind` (a max relative
            difference, or a min cosine similarity for quantized kinds).
        labelled: whether labels were given (enables the top-1 check).
        min_top1_agreement: overrides the default 0.95.
    """
    metric, bound = TOLERANCES[kind]
    bound = bound if tolerance is None else float(tolerance)
    failures = []
    if metric == "rel":
        report.tolerance = f"max_rel_diff <= {bound:g}"
        if not report.max_rel_diff <= bound:
            failures.append(f"max relative difference {report.max_rel_diff:.3g} > {bound:g} "
                            f"(max absolute difference {report.max_abs_diff:.3g})")
    else:
        report.tolerance = f"cosine >= {bound:g}"
        if not report.cosine >= bound:
            failures.append(f"mean cosine similarity {report.cosine:.4f} < {bound:g} "
                            f"(min {report.min_cosine:.4f})")
    if labelled and report.top1_agreement is not None:
        top1 = MIN_TOP1_AGREEMENT if min_top1_agreement is None else min_top1_agreement
        report.tolerance += f", top1_agreement >= {top1:g}"
        if not report.top1_agreement >= top1:
            failures.append(f"top-1 agreement {report.top1_agreement:.3f} < {top1:g}")
    if failures:
        raise ExportVerificationError(
            f"The {report.format} export does not reproduce the Keras model on "
            f"{report.samples} inputs: {'; '.join(failures)}. Nothing was written to "
            f"{report.path!r}; pass `verify=False` to write it anyway.",
            report,
        )
    return report


def apply(report, measured):
    for key, value in measured.items():
        setattr(report, key, value)
    report.verified = True
    return report


def split_verify_data(verify_data):
    """`(x, labels)` from `verify_data`: an array, or an `(x, labels)` pair."""
    if verify_data is None:
        return None, None
    if isinstance(verify_data, tuple) and len(verify_data) == 2:
        return verify_data
    return verify_data, None
