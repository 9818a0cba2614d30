"""Numerical verification of exported artifacts against the Keras model.

Float32 files must give the model's outputs; float16 and dynamic-range files must keep
what it says on photo-like inputs, on logits (probabilities of unsure inputs reorder
under any rounding) and the top class; int8 files by cosine on calibration images.
"""

import dataclasses
import math
import numbers

import numpy as np

from keras_lightnets import _utils
from keras_lightnets.export import _model

# Per kind of artifact: ("rel", max relative difference of the outputs), ("logit_rel", the
# same on logits), ("logit_cosine", min mean cosine of logits) or ("cosine", of outputs).
TOLERANCES = {"float32": ("rel", 1e-4), "float16": ("logit_rel", 0.1),
              "dynamic": ("logit_cosine", 0.85), "int8": ("cosine", 0.95)}
MIN_TOP1_AGREEMENT = {"float32": 0.95, "float16": 0.95, "dynamic": 0.7, "int8": 0.95}
# Float16 and dynamic-range: least share of inputs with the top class in the model's TOP_K.
MIN_TOP1_IN_TOPK = 0.75
TOP_K = 5
TOPK_KINDS = ("float16", "dynamic")
CONSTANT_SPREAD = 1e-3  # of the largest output: a sample spread less is near-constant
LABELS = {
    "rel": ("max_rel_diff", "max relative difference", "<="),
    "logit_rel": ("logit_max_rel_diff", "max relative difference of the logits", "<="),
    "logit_cosine": ("logit_cosine", "mean cosine similarity of the logits", ">="),
    "cosine": ("cosine", "mean cosine similarity", ">="),
}


class ExportError(RuntimeError):
    """An export that could not be converted or written."""


class ExportVerificationError(ExportError):
    """The artifact does not reproduce the model (nothing was written); see `report`."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how closely it reproduces the model.

    Attributes:
        path, format, size_bytes: the artifact, "saved_model", "tflite" or "onnx", its size.
        ops: its sorted op names; quantization: None, "float16", "dynamic" or "int8".
        inputs, outputs: per tensor `{"name", "shape", "dtype"}` (quantized: `"scale"`, ...).
        verified, samples, verify_inputs: whether it was compared with the model, on how
            many inputs and which ("synthetic images", "random inputs", ...).
        max_abs_diff, max_rel_diff: largest absolute difference from the model's outputs,
            and that over the largest absolute output.
        cosine, min_cosine: mean and least per-sample cosine similarity of the outputs.
        logit_max_rel_diff, logit_cosine, logit_min_cosine: the same on logits.
        top5_overlap, top1_in_top5: classifiers, the mean share of the model's top 5 in
            the artifact's, and of samples whose top class is in the model's top 5.
        constant_outputs: samples on which either output is near-constant.
        top1_agreement, top1_ties, top1_agreement_with_ties: share of samples with the
            model's arg-max, samples tied at the top, agreement counting ties (unchecked).
        top1_accuracy, reference_top1_accuracy: with labels, the artifact's and model's.
        tolerance: the check applied, e.g. `"max_rel_diff <= 0.0001"`.
        gpu_compatible, max_tensor_rank: TFLite only, the GPU analyzer's verdict, max rank.
        passes: `{pass name: "applied" | "not applicable" | "off"}` (`export.passes`).
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
    logit_max_rel_diff: float = None
    logit_cosine: float = None
    logit_min_cosine: float = None
    top5_overlap: float = None
    top1_in_top5: float = None
    constant_outputs: int = None
    verify_inputs: str = None
    tolerance: str = None
    gpu_compatible: bool = None
    max_tensor_rank: int = None
    passes: dict = None

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
        for outcome in ("applied", "not applicable", "off"):
            names = [name for name, value in (self.passes or {}).items() if value == outcome]
            if names:
                lines.append(f"  passes {outcome}: {', '.join(names)}")
        if self.verified:
            parts = [f"max rel diff {self.max_rel_diff:.3g}", f"cosine {self.cosine:.6f}"]
            if self.logit_cosine is not None and self.quantization in TOPK_KINDS:
                parts.append(f"logits: max rel diff {self.logit_max_rel_diff:.3g}, "
                             f"cosine {self.logit_cosine:.4f}")
            if self.top1_agreement is not None:
                parts.append(f"top-1 agreement {self.top1_agreement:.3f}")
            if self.top1_in_top5 is not None:
                parts.append(f"top-1 in Keras top-5 {self.top1_in_top5:.3f}")
            if self.top1_ties:
                parts.append(f"{self.top1_ties} outputs tied at the top (agreement "
                             f"{self.top1_agreement_with_ties:.3f} counting ties)")
            if self.top1_accuracy is not None:
                parts.append(f"top-1 {self.top1_accuracy:.3f} "
                             f"(Keras {self.reference_top1_accuracy:.3f})")
            inputs = f" ({self.verify_inputs})" if self.verify_inputs else ""
            lines.append(f"  verified on {self.samples} inputs{inputs}: {', '.join(parts)}")
            lines.append(f"  criterion: {self.tolerance}")
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


def _is_softmax(output):
    return (output.ndim == 2 and output.shape[1] > 1 and bool(np.all(output >= 0))
            and np.allclose(output.sum(1), 1.0, atol=1e-3))


def _logits(output, softmax):
    """A softmax output's centred log-probabilities, or the output itself."""
    if not softmax:
        return output.astype("float64")
    tiny = np.finfo("float32").tiny
    log = np.log(np.maximum(output.astype("float64"), tiny))
    return log - log.mean(1, keepdims=True)


def _rel_diff(reference, actual):
    """(max absolute difference, largest absolute reference value)."""
    if not reference.size:
        return 0.0, 0.0
    return float(np.max(np.abs(reference - actual))), float(np.max(np.abs(reference)))


def _constant(outputs):
    """Per sample, whether `outputs` is near-constant."""
    flat = outputs.reshape(len(outputs), -1).astype("float64")
    if not flat.size:
        return np.zeros(len(outputs), bool)
    spread = flat.max(1) - flat.min(1)
    return spread <= CONSTANT_SPREAD * max(float(np.max(np.abs(flat))), 1e-30)


def _topk(outputs, k):
    return np.argsort(-outputs, axis=1, kind="stable")[:, :k]


def measure(reference, actual, labels=None):
    """Differences between lists of reference and artifact outputs."""
    if len(reference) != len(actual):
        raise ExportError(f"The artifact has {len(actual)} outputs, the model "
                          f"{len(reference)}.")
    abs_diff = scale = logit_diff = logit_scale = 0.0
    cosines, logit_cosines = [], []
    constant = np.zeros(len(reference[0]), bool)
    for ref, act in zip(reference, actual, strict=True):
        if ref.shape != act.shape:
            raise ExportError(f"Output shape {act.shape} of the artifact differs from the "
                              f"model's {ref.shape}.")
        diff, top = _rel_diff(ref, act)
        abs_diff, scale = max(abs_diff, diff), max(scale, top)
        cosines.append(_cosines(ref, act))
        softmax = _is_softmax(ref)
        ref_logits, act_logits = _logits(ref, softmax), _logits(act, softmax)
        diff, top = _rel_diff(ref_logits, act_logits)
        logit_diff, logit_scale = max(logit_diff, diff), max(logit_scale, top)
        logit_cosines.append(_cosines(ref_logits, act_logits))
        constant |= _constant(ref) | _constant(act)
    cosines = np.min(np.stack(cosines), axis=0)
    logit_cosines = np.min(np.stack(logit_cosines), axis=0)
    result = {
        "samples": int(len(reference[0])),
        "max_abs_diff": abs_diff,
        "max_rel_diff": abs_diff / scale if scale > 0 else abs_diff,
        "cosine": float(np.mean(cosines)),
        "min_cosine": float(np.min(cosines)),
        "logit_max_rel_diff": logit_diff / logit_scale if logit_scale > 0 else logit_diff,
        "logit_cosine": float(np.mean(logit_cosines)),
        "logit_min_cosine": float(np.min(logit_cosines)),
        "constant_outputs": int(np.sum(constant)),
    }
    first_ref, first_act = reference[0], actual[0]
    if first_ref.ndim == 2 and first_ref.shape[1] > 1:
        ref_top, act_top = first_ref.argmax(1), first_act.argmax(1)
        result["top1_agreement"] = float(np.mean(ref_top == act_top))
        ref_max, act_max = _at_max(first_ref), _at_max(first_act)
        result["top1_ties"] = int(np.sum(act_max.sum(1) > 1))
        result["top1_agreement_with_ties"] = float(np.mean((ref_max & act_max).any(1)))
        if first_ref.shape[1] >= 2 * TOP_K:
            ref_k, act_k = _topk(first_ref, TOP_K), _topk(first_act, TOP_K)
            result["top5_overlap"] = float(np.mean(
                [len(set(r) & set(a)) / TOP_K for r, a in zip(ref_k, act_k, strict=True)]))
            result["top1_in_top5"] = float(np.mean((ref_k == act_top[:, None]).any(1)))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            result["top1_accuracy"] = float(np.mean(act_top == labels))
            result["reference_top1_accuracy"] = float(np.mean(ref_top == labels))
    return result


def check_tolerance(kind, tolerance=None, min_top1_agreement=None):
    """Raises `ValueError` for a bound that no measurement can be held to."""
    metric = TOLERANCES[kind][0]
    cosine = metric in ("cosine", "logit_cosine")
    def number(x):
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    if tolerance is not None:
        what = ("a least cosine similarity in (0, 1]" if cosine
                else "a positive finite relative difference")
        _utils.check(number(tolerance) and math.isfinite(tolerance) and 0 < tolerance and (
            tolerance <= 1 or not cosine), f"`tolerance` must be {what}.", tolerance=tolerance)
    if min_top1_agreement is not None:
        _utils.check(number(min_top1_agreement) and 0 <= min_top1_agreement <= 1,
                     "`min_top1_agreement` must be a fraction in [0, 1].",
                     min_top1_agreement=min_top1_agreement)


def check(report, kind, tolerance=None, labelled=False, min_top1_agreement=None):
    """Raises `ExportVerificationError` when measured `report` is out of the bounds of `kind`
    (a key of `TOLERANCES`; `tolerance` and `min_top1_agreement` override them)."""
    check_tolerance(kind, tolerance, min_top1_agreement)
    metric, bound = TOLERANCES[kind]
    bound = bound if tolerance is None else float(tolerance)
    field, label, sign = LABELS[metric]
    value = getattr(report, field)
    criteria = [f"{field} {sign} {bound:g}"]
    failures = []
    if not (value <= bound if sign == "<=" else value >= bound):
        detail = (f"max absolute difference {report.max_abs_diff:.3g}" if metric == "rel"
                  else f"min {report.logit_min_cosine:.4f}" if metric == "logit_cosine"
                  else f"min {report.min_cosine:.4f}" if metric == "cosine"
                  else f"cosine of the logits {report.logit_cosine:.4f}")
        shown = f"{value:.4f}" if "cosine" in metric else f"{value:.3g}"
        failures.append(f"{label} {shown} {'>' if sign == '<=' else '<'} {bound:g} "
                        f"({detail})")
    if kind in TOPK_KINDS and report.top1_in_top5 is not None:
        criteria.append(f"top1_in_top5 >= {MIN_TOP1_IN_TOPK:g}")
        if not report.top1_in_top5 >= MIN_TOP1_IN_TOPK:
            failures.append(f"the top class is among the model's top {TOP_K} on "
                            f"{report.top1_in_top5:.3f} of the inputs < {MIN_TOP1_IN_TOPK:g}")
    if labelled and report.top1_agreement is not None:
        top1 = MIN_TOP1_AGREEMENT[kind] if min_top1_agreement is None else min_top1_agreement
        criteria.append(f"top1_agreement >= {top1:g}")
        if not report.top1_agreement >= top1:
            failures.append(f"top-1 agreement {report.top1_agreement:.3f} < {top1:g}")
    report.tolerance = ", ".join(criteria)
    if report.verify_inputs:
        report.tolerance += f" (on {report.samples} {report.verify_inputs})"
    if failures:
        hint = ""
        if report.constant_outputs and 2 * report.constant_outputs >= report.samples:
            hint = (f" The outputs are near-constant on {report.constant_outputs} of "
                    f"{report.samples} inputs: an untrained model, or calibration data unlike "
                    "the inputs. Export a trained model, and calibrate it on images like the "
                    "ones it will see.")
        raise ExportVerificationError(
            f"The {report.format} export does not reproduce the Keras model on "
            f"{report.samples} inputs: {'; '.join(failures)}.{hint} Nothing was written to "
            f"{report.path!r}; pass `verify=False` to write it anyway.",
            report,
        )
    return report


def apply(report, measured):
    for key, value in measured.items():
        setattr(report, key, value)
    report.verified = True
    return report


def split_verify_data(verify_data, shape):
    """`(x, labels)` from `verify_data` (an array or an `(x, labels)` pair), x checked."""
    x, labels = verify_data if isinstance(verify_data, tuple) and len(verify_data) == 2 \
        else (verify_data, None)
    return (None if x is None else _model.as_array(x, shape, "verify_data")), labels
