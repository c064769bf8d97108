"""The known causes of divergence, each a registered check that re-computes the diverging
layer under its hypothesis and sees whether that explains the difference.

A check receives a ``Divergence`` (both models' views, the diverging pair, what each
produced) and returns a ``Finding``: the error that remains under the hypothesis and
whether it fits. Weight hypotheses (a flipped kernel, reordered Dense rows, a missing bias)
are tried by assigning the changed weights to model b, running it, and restoring every
weight afterwards; config hypotheses (BatchNorm epsilon, padding, activation variant) are
re-computed in numpy from the layer's weights and input.

Register another cause with ``@register_cause("my_cause")``.

Example:
    >>> sorted(CAUSES)[:3]
    ['activation_variant', 'architecture', 'batch_norm_epsilon']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Kind, Role
from .alignment import channels_first, fused_activation, to_channels_last
from .reference import ACTIVATIONS, conv_nd, same_padding

if TYPE_CHECKING:
    from ..modelview import LayerView, ModelView
    from .result import Diagnosis, LayerComparison

CONV_KINDS = frozenset({Kind.CONV1D, Kind.CONV2D, Kind.CONV3D, Kind.DEPTHWISE_CONV2D,
                        Kind.CONV1D_TRANSPOSE, Kind.CONV2D_TRANSPOSE, Kind.CONV3D_TRANSPOSE})
PLAIN_CONV = frozenset({Kind.CONV1D, Kind.CONV2D, Kind.CONV3D})
EPSILONS = (1e-3, 1.001e-5, 1e-5, 1e-4, 1e-6, 2e-5, 0.0)


@dataclass
class Divergence:
    """The first diverging pair and everything a check needs to re-compute it.

    ``ya``/``yb`` are what was compared (channels-last, same stage); ``stage_b`` turns a
    capture of model b into ``yb`` again, so a check can re-run b with changed weights.
    For a divergence of the final outputs only, ``la``/``lb`` are the last pair compared.
    """

    view_a: ModelView
    view_b: ModelView
    la: LayerView | None
    lb: LayerView | None
    row: LayerComparison
    ya: np.ndarray
    yb: np.ndarray
    captured_a: dict[str, np.ndarray]
    captured_b: dict[str, np.ndarray]
    inputs_a: list[np.ndarray]
    inputs_b: list[np.ndarray]
    outputs_a: list[np.ndarray]
    outputs_b: list[np.ndarray]
    pairs: list[tuple[LayerView, LayerView]]
    stage_b: Callable[[dict[str, np.ndarray]], np.ndarray]
    atol: float
    rtol: float
    outputs_only: bool = False

    @property
    def before(self) -> float:
        return self.error(self.ya, self.yb)

    def error(self, a: np.ndarray, b: np.ndarray) -> float:
        if np.shape(a) != np.shape(b):
            return float("inf")
        return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)),
                            initial=0.0))

    def explains(self, error_after: float, reference: np.ndarray | None = None) -> bool:
        """Whether an error left under a hypothesis is down at float32 noise."""
        ref = self.ya if reference is None else reference
        scale = float(np.max(np.abs(ref), initial=0.0))
        return error_after <= max(10 * (self.atol + self.rtol * scale), 1e-4 * scale)

    def slot(self, view: ModelView, lv: LayerView, *roles: Role) -> str | None:
        for key in lv.slots:
            if view.slots[key].role in roles:
                return key
        return None

    def rerun_b(self, changes: Mapping[str, np.ndarray]) -> np.ndarray:
        """b's output at the diverging layer with some weights changed; b is restored after."""
        saved = {key: self.view_b.read(key) for key in changes}
        try:
            for key, value in changes.items():
                self.view_b.assign(key, np.asarray(value).astype(saved[key].dtype))
            return self.stage_b(self.view_b.capture(self.inputs_b))
        finally:
            for key, value in saved.items():
                self.view_b.assign(key, value)


@dataclass(frozen=True)
class Finding:
    """A check's verdict: ``error_after`` is the difference left under the hypothesis."""

    fits: bool
    explanation: str
    error_after: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[[Divergence], "Finding | None"]
CAUSES: dict[str, Check] = {}


def register_cause(cause: str) -> Callable[[Check], Check]:
    """Register a check under a cause id; it returns ``None`` where it does not apply."""
    def add(check: Check) -> Check:
        CAUSES[cause] = check
        return check
    return add


def config_value(lv: LayerView, *names: str, default: Any = None) -> Any:
    """A config entry under its Keras or PyTorch name (``strides``/``stride``)."""
    for name in names:
        if name in lv.config and lv.config[name] is not None:
            return lv.config[name]
    return default


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int | np.integer):
        return (int(value),) * n
    return tuple(int(v) for v in value)


def _spatial_axes(view: ModelView, key: str) -> tuple[int, ...]:
    slot = view.slots[key]
    n = len(slot.shape) - 2
    return tuple(range(2, 2 + n)) if view.framework == "torch" else tuple(range(n))


# -- weights ------------------------------------------------------------------------------
@register_cause("flipped_kernel")
def flipped_kernel(d: Divergence) -> Finding | None:
    """Theano-era kernels are stored flipped (true convolution); an unflipped one diverges."""
    if d.lb is None or d.lb.kind not in CONV_KINDS or d.outputs_only:
        return None
    key = d.slot(d.view_b, d.lb, Role.KERNEL, Role.DEPTHWISE_KERNEL)
    if key is None:
        return None
    kernel = d.view_b.read(key)
    flipped = np.flip(kernel, axis=_spatial_axes(d.view_b, key))
    after = d.error(d.ya, d.rerun_b({key: flipped}))
    return Finding(
        d.explains(after),
        f"{d.lb.path}'s kernel is spatially flipped relative to {d.la.path if d.la else 'a'}'s "
        "(Theano-era weights: dim_ordering 'th' stores kernels flipped for true convolution); "
        "flip the kernel's spatial axes when converting (source convention 'theano')",
        after, {"slot": key, "error_before": d.before, "error_with_b_flipped": after})


@register_cause("flatten_order")
def flatten_order(d: Divergence) -> Finding | None:
    """A Dense after Flatten whose input rows are in the other channel order (chw vs hwc)."""
    if d.lb is None or d.lb.kind is not Kind.DENSE or d.outputs_only:
        return None
    context = d.lb.config.get("flatten_input") or (d.la.config.get("flatten_input")
                                                   if d.la else None)
    key = d.slot(d.view_b, d.lb, Role.KERNEL)
    if not context or key is None:
        return None
    shape = dict(context["feature_shape"])
    spatial = "".join(x for x in "dhw" if x in shape)
    if "c" not in shape or not spatial:
        return None
    kernel = d.view_b.read(key)
    axis = 1 if d.view_b.framework == "torch" else 0
    first, last = "c" + spatial, spatial + "c"
    grid = np.arange(int(np.prod([shape[x] for x in first]))).reshape([shape[x] for x in first])
    to_last = grid.transpose([first.index(x) for x in last]).ravel()
    if to_last.size != kernel.shape[axis]:
        return None
    tries = {}
    candidates = ((f"{first} -> {last}", to_last), (f"{last} -> {first}", np.argsort(to_last)))
    for label, perm in candidates:
        tries[label] = d.error(d.ya, d.rerun_b({key: np.take(kernel, perm, axis=axis)}))
    label = min(tries, key=tries.__getitem__)
    return Finding(
        d.explains(tries[label]),
        f"{d.lb.path}'s weight rows follow the other Flatten order: the feature map "
        f"{shape} was flattened as {first!r} on one side and {last!r} on the other; reorder "
        f"the rows ({label}) when converting",
        tries[label], {"slot": key, "feature_shape": shape, "error_before": d.before,
                       **{f"error_reordered_{k}": v for k, v in tries.items()}})


# -- configs ------------------------------------------------------------------------------
@register_cause("batch_norm_epsilon")
def batch_norm_epsilon(d: Divergence) -> Finding | None:
    """Keras's BatchNorm epsilon is 1e-3, PyTorch's 1e-5: same weights, different outputs."""
    if d.la is None or d.lb is None or d.lb.kind is not Kind.BATCH_NORM or d.outputs_only:
        return None
    var_key = d.slot(d.view_b, d.lb, Role.MOVING_VARIANCE)
    if var_key is None or d.ya.shape != d.yb.shape:
        return None
    var = d.view_b.read(var_key).astype(np.float64)
    beta_key = d.slot(d.view_b, d.lb, Role.BETA)
    beta = d.view_b.read(beta_key).astype(np.float64) if beta_key else 0.0
    eps_a = config_value(d.la, "epsilon", "eps")
    eps_b = config_value(d.lb, "epsilon", "eps")
    sources = [float(eps_b)] if eps_b is not None else list(EPSILONS)
    targets = [float(eps_a)] if eps_a is not None else list(EPSILONS)
    best: tuple[float, float, float] | None = None
    for from_eps in sources:
        for to_eps in targets:
            if from_eps == to_eps:
                continue
            # Undo b's normalisation scale and redo it with a's epsilon: gamma cancels.
            y = (d.yb - beta) * np.sqrt(var + from_eps) / np.sqrt(var + to_eps) + beta
            err = d.error(d.ya, y)
            if best is None or err < best[0]:
                best = (err, from_eps, to_eps)
    if best is None:
        return None
    err, from_eps, to_eps = best
    evidence = {"epsilon_a": to_eps, "epsilon_b": from_eps, "error_before": d.before,
                "error_with_a_epsilon": err}
    text = (f"BatchNorm epsilon differs: a's {d.la.path} uses {to_eps:g}, b's {d.lb.path} uses "
            f"{from_eps:g} (Keras defaults to 1e-3, PyTorch to 1e-5); set b's epsilon to a's")
    mom_a, mom_b = config_value(d.la, "momentum"), config_value(d.lb, "momentum")
    if mom_a is not None and mom_b is not None:
        # PyTorch weighs the new batch by momentum, Keras the old average: m_torch = 1 - m_keras.
        keras_a = mom_a if d.view_a.framework != "torch" else 1 - mom_a
        keras_b = mom_b if d.view_b.framework != "torch" else 1 - mom_b
        evidence.update(momentum_a=mom_a, momentum_b=mom_b)
        if abs(keras_a - keras_b) > 1e-9:
            text += (f"; momentum differs too (as Keras momentum {keras_a:g} vs {keras_b:g}), "
                     "which changes training only, not these outputs")
    return Finding(d.explains(err), text, err, evidence)


@register_cause("padding")
def padding(d: Divergence) -> Finding | None:
    """TensorFlow's 'same' pads the odd extra row at the end; PyTorch pads both sides."""
    if d.lb is None or d.la is None or d.lb.kind not in PLAIN_CONV or d.outputs_only:
        return None
    from ..layouts import convert_tensor
    from .alignment import layer_input

    x = layer_input(d.view_b, d.lb, d.captured_b, d.inputs_b)
    key = d.slot(d.view_b, d.lb, Role.KERNEL)
    if x is None or key is None:
        return None
    x = to_channels_last(x, channels_first(d.view_b, d.lb, np.ndim(x)))
    kernel = convert_tensor(d.view_b.read(key), d.lb.kind, Role.KERNEL,
                            d.view_b.convention, "keras")
    bias_key = d.slot(d.view_b, d.lb, Role.BIAS)
    bias = d.view_b.read(bias_key) if bias_key else None
    n = kernel.ndim - 2
    if x.ndim != n + 2 or int(config_value(d.lb, "groups", default=1)) != 1:
        return None
    strides = _tuple(config_value(d.lb, "strides", "stride", default=1), n)
    dilation = _tuple(config_value(d.lb, "dilation_rate", "dilation", default=1), n)
    explicit = _explicit_pads(d, x, n)
    if explicit is not None:  # b pads with F.pad before an unpadded conv: start from a's input
        x, explicit_pads = explicit
    sizes = x.shape[1:-1]
    variants = {
        "'same' as TensorFlow (extra row/column at the end)":
            [same_padding(s, k, st, dl) for s, k, st, dl in
             zip(sizes, kernel.shape[:n], strides, dilation)],
        "symmetric (PyTorch padding=k//2 on both sides)":
            [(((k - 1) * dl) // 2,) * 2 for k, dl in zip(kernel.shape[:n], dilation)],
        "'valid' (none)": [(0, 0)] * n,
    }
    if explicit is not None:
        variants["explicitly before the conv (F.pad)"] = explicit_pads
    act_a, act_b = fused_activation(d.la), fused_activation(d.lb)
    # ya and yb were compared at one stage: after the activation either side fuses in.
    act_a, act_b = act_a or act_b, act_b or act_a
    errors: dict[str, tuple[float, float]] = {}
    for label, pads in variants.items():
        y = conv_nd(x, kernel, bias, strides, pads, dilation)
        ya_hyp = ACTIVATIONS.get(act_a, lambda v: v)(y) if act_a else y
        yb_hyp = ACTIVATIONS.get(act_b, lambda v: v)(y) if act_b else y
        errors[label] = (d.error(d.ya, ya_hyp), d.error(d.yb, yb_hyp))
    fit_a = min(errors, key=lambda k: errors[k][0])
    fit_b = min(errors, key=lambda k: errors[k][1])
    fits = (variants[fit_a] != variants[fit_b] and d.explains(errors[fit_a][0])
            and d.explains(errors[fit_b][1], d.yb))
    return Finding(
        fits,
        f"padding differs at {d.la.path}/{d.lb.path} (stride {strides}): a pads {fit_a} "
        f"{_pads_text(variants[fit_a])}, b pads {fit_b} {_pads_text(variants[fit_b])}; pad "
        "the input explicitly (e.g. ZeroPadding2D(((0,1),(0,1))) or "
        "F.pad) so both sides use the same rows",
        max(errors[fit_a][0], errors[fit_b][1]),
        {"error_before": d.before, "strides": strides,
         **{f"a_vs_{k}": v[0] for k, v in errors.items()},
         **{f"b_vs_{k}": v[1] for k, v in errors.items()}})


def _pads_text(pads: Sequence[tuple[int, int]]) -> str:
    """``[(31, 32), (0, 0)]`` as ``(before, after) per axis: (31, 32), (0, 0)``."""
    return "(before, after) per axis: " + ", ".join(f"({lo}, {hi})" for lo, hi in pads)


def _explicit_pads(d: Divergence, xb: np.ndarray, n: int
                   ) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """When b's conv input is larger than a's because b pads it itself (``F.pad``, as
    PyTorch ports of TensorFlow 'same' convolutions do), a's input and the pads b added,
    found by locating a's input inside b's. None when the inputs are the same size."""
    from itertools import product

    from .alignment import layer_input

    if d.la is None or int(np.max(_tuple(config_value(d.lb, "padding", default=0), n))) != 0:
        return None
    xa = layer_input(d.view_a, d.la, d.captured_a, d.inputs_a)
    if xa is None:
        return None
    xa = to_channels_last(xa, channels_first(d.view_a, d.la, np.ndim(xa)))
    if xa.ndim != xb.ndim or xa.shape == xb.shape or (xa.shape[0], xa.shape[-1]) != (
            xb.shape[0], xb.shape[-1]):
        return None
    extra = [xb.shape[i] - xa.shape[i] for i in range(1, n + 1)]
    if min(extra) < 0 or np.prod([e + 1 for e in extra]) > 4096:
        return None
    for offsets in product(*(range(e + 1) for e in extra)):
        window = (slice(None), *(slice(o, o + xa.shape[i + 1]) for i, o in enumerate(offsets)),
                  slice(None))
        if np.allclose(xb[window], xa, atol=1e-6):
            return xa, [(o, e - o) for o, e in zip(offsets, extra)]
    return None


def diagnose(d: Divergence) -> Diagnosis:
    """Run every registered check on the divergence; the best fitting one is the cause.

    Among fitting checks, the one whose hypothesis leaves the smallest error wins
    (config-only and shape findings count as exact). Nothing fitting gives ``unknown``,
    with every check's remaining error in ``tried``.
    """
    from . import structure_causes  # noqa: F401  (registers the definition-level causes)
    from ..errors import WeightgraftError
    from .result import Diagnosis

    tried: dict[str, float | None] = {}
    fitting: list[tuple[float, str, Finding]] = []
    unchecked: dict[str, str] = {}
    before = d.before
    for cause, check in CAUSES.items():
        tried[cause] = None
        try:
            finding = check(d)
        except (WeightgraftError, ValueError, KeyError, IndexError) as exc:
            unchecked[cause] = str(exc)  # one check failing must not hide the others' verdicts
            continue
        if finding is None:
            continue
        tried[cause] = finding.error_after
        if finding.fits:
            ratio = (0.0 if finding.error_after is None else
                     finding.error_after / before if before and np.isfinite(before) else
                     finding.error_after)
            fitting.append((ratio, cause, finding))
    la = d.la.path if d.la else ""
    lb = d.lb.path if d.lb else ""
    if fitting:
        _, cause, finding = min(fitting, key=lambda item: item[0])
        return Diagnosis(cause, finding.explanation, la, lb, dict(finding.evidence), tried)
    where = "the final outputs" if d.outputs_only else f"{la} / {lb}"
    applied = [c for c, err in tried.items() if err is not None]
    text = (f"none of the known causes explains the difference at {where} "
            f"(max abs {before:.3g}); re-computed under: {', '.join(applied) or 'none applied'}")
    evidence: dict[str, Any] = {"error_before": before}
    if unchecked:
        evidence["could_not_check"] = unchecked
    return Diagnosis("unknown", text, la, lb, evidence, tried)
