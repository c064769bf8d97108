"""``verify(a, b)``: run two models on the same inputs, find the first layer where they part,
and say why.

Both models get the same seeded, asymmetric random inputs (standard normal, never all-ones
or symmetric, so a wrong permutation cannot pass), each in its own layout. Every matched
layer's output and the final outputs are compared channels-last. At the first divergence,
every registered cause (``weightgraft.verify.causes``) re-computes that layer under its
hypothesis; the one that explains the difference is the diagnosis.

Example:
    >>> import weightgraft as wg                                    # doctest: +SKIP
    >>> result = wg.verify(keras_model, torch_model)                # doctest: +SKIP
    >>> result.passed, result.first_divergence.layer_a              # doctest: +SKIP
    (False, 'conv2d')
    >>> result.diagnosis.cause                                      # doctest: +SKIP
    'flipped_kernel'
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

from ..modelview import ModelView, view
from .alignment import channels_first, pair_layers, probe_inputs, to_channels_last
from .causes import CAUSES, Divergence, Finding, diagnose, register_cause
from .compare import last_step_if_needed, measure, stage_output
from .result import OUTPUT, Diagnosis, LayerComparison, VerifyResult

__all__ = ["CAUSES", "Diagnosis", "Divergence", "Finding", "LayerComparison", "VerifyResult",
           "paired_views", "register_cause", "verify"]


def verify(a: Any, b: Any, *, inputs: Any = None, seed: int = 0, batch: int = 2,
           atol: float = 1e-5, rtol: float = 1e-4, layer_pairs: Any = None) -> VerifyResult:
    """Compare two live models (Keras 3 or PyTorch, or their ``ModelView``s) layer by layer.

    ``inputs``: a ``.npy``/``.npz`` path, an array, or a list of them, in a's layout
    (default: ``batch`` seeded normal samples shaped from a's inputs). ``layer_pairs``: a
    ``Plan`` from ``weightgraft.match(a, b)``, or ``[(layer_in_a, layer_in_b), ...]``;
    default: weighted layers paired in execution order by kind. Neither model is changed:
    weights tried under a hypothesis are restored, and models run in inference mode.

    Example:
        >>> r = verify(keras_twin, torch_twin, atol=1e-5)        # doctest: +SKIP
        >>> r.passed, f"{r.outputs_max_abs:.1e}"                 # doctest: +SKIP
        (True, '2.4e-07')
    """
    view_a, view_b = paired_views(a, b)
    inputs_a, inputs_b = probe_inputs(view_a, view_b, inputs, seed, batch)
    captured_a = view_a.capture(inputs_a, with_inputs=True)
    captured_b = view_b.capture(inputs_b, with_inputs=True)
    outputs_a, outputs_b = view_a.forward(inputs_a), view_b.forward(inputs_b)
    pairs = pair_layers(view_a, view_b, layer_pairs)
    notes: list[str] = []

    rows: list[LayerComparison] = []
    staged: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    compared: list[tuple[Any, Any]] = []
    for la, lb in pairs:
        if la.path not in captured_a or lb.path not in captured_b:
            notes.append(f"{la.path} / {lb.path}: no recorded output, not compared")
            continue
        ya, note_a = stage_output(view_a, la, captured_a, lb)
        yb, note_b = stage_output(view_b, lb, captured_b, la)
        ya, yb, note = last_step_if_needed(la, ya, yb)
        note_b = "; ".join(n for n in (note_b, note) if n)
        max_abs, max_rel, ok = measure(ya, yb, atol, rtol)
        staged[len(rows)] = (ya, yb)
        compared.append((la, lb))
        rows.append(LayerComparison(la.path, lb.path, str(la.kind), max_abs, max_rel, ok,
                                    tuple(ya.shape), tuple(yb.shape),
                                    "; ".join(n for n in (note_a, note_b) if n)))

    out_rows: list[LayerComparison] = []
    out_arrays: list[tuple[np.ndarray, np.ndarray]] = []
    if len(outputs_a) != len(outputs_b):
        notes.append(f"a has {len(outputs_a)} outputs, b has {len(outputs_b)}")
    for i, (oa, ob) in enumerate(zip(outputs_a, outputs_b)):
        ya = _output_channels_last(view_a, captured_a, oa)
        yb = _output_channels_last(view_b, captured_b, ob)
        max_abs, max_rel, ok = measure(ya, yb, atol, rtol)
        name = OUTPUT if len(outputs_a) == 1 else f"{OUTPUT}[{i}]"
        out_rows.append(LayerComparison(name, name, "output", max_abs, max_rel, ok,
                                        tuple(ya.shape), tuple(yb.shape)))
        out_arrays.append((ya, yb))

    first = next((r for r in rows if not r.passed), None)
    diagnosis = None
    if first is not None:
        index = rows.index(first)
        la, lb = compared[index]
        ya, yb = staged[index]
        divergence = Divergence(
            view_a, view_b, la, lb, first, ya, yb, captured_a, captured_b, inputs_a, inputs_b,
            outputs_a, outputs_b, compared,
            lambda captured, la=la, lb=lb, ya=ya: last_step_if_needed(
                la, ya, stage_output(view_b, lb, captured, la)[0])[1], atol, rtol)
        diagnosis = diagnose(divergence)
    else:
        first = next((r for r in out_rows if not r.passed), None)
        if first is not None:
            ya, yb = out_arrays[out_rows.index(first)]
            la, lb = compared[-1] if compared else (None, None)
            divergence = Divergence(
                view_a, view_b, la, lb, first, ya, yb, captured_a, captured_b, inputs_a,
                inputs_b, outputs_a, outputs_b, compared, lambda captured: yb, atol, rtol,
                outputs_only=True)
            diagnosis = diagnose(divergence)

    paired_a = {la.path for la, _ in pairs}
    paired_b = {lb.path for _, lb in pairs}
    return VerifyResult(
        passed=first is None and len(outputs_a) == len(outputs_b),
        layers=tuple(rows), first_divergence=first, diagnosis=diagnosis,
        outputs_max_abs=max((r.max_abs for r in out_rows), default=0.0),
        outputs_max_rel=max((r.max_rel for r in out_rows), default=0.0),
        outputs=tuple(out_rows), atol=atol, rtol=rtol, seed=seed,
        input_shapes_a=tuple(tuple(x.shape) for x in inputs_a),
        input_shapes_b=tuple(tuple(x.shape) for x in inputs_b),
        framework_a=view_a.framework, framework_b=view_b.framework,
        unpaired_a=tuple(lv.path for lv in view_a.layers if lv.slots and lv.path not in paired_a),
        unpaired_b=tuple(lv.path for lv in view_b.layers if lv.slots and lv.path not in paired_b),
        notes=tuple(notes))


def paired_views(a: Any, b: Any) -> tuple[ModelView, ModelView]:
    """Views of two models that will run on the same inputs.

    A side that cannot tell its input shape (a PyTorch module, which declares none) gets the
    other side's, in its own layout. Views passed in are kept as they are.

    Example:
        >>> va, vb = paired_views(keras_cnn, torch_cnn)    # doctest: +SKIP
        >>> vb.inputs[0].shape                              # doctest: +SKIP
        (3, 28, 28)
    """
    from ..errors import WeightgraftError
    from ..modelview import InputSpec
    from .alignment import in_layout_of

    views = [view(a), view(b)]
    for i in (0, 1):
        mine, other = views[i], views[1 - i]
        if (a, b)[i] is mine:  # the caller built this view: keep it as it is
            continue
        try:
            mine.inputs
        except WeightgraftError as exc:
            try:
                specs = list(other.inputs)
            except WeightgraftError:
                specs = []
            if len(specs) != 1:
                raise WeightgraftError(
                    f"cannot tell the input shape of model {'ab'[i]} from either model",
                    expected="one side with a declared input (a Keras model with an Input)",
                    fix="pass weightgraft.view(model, input_shape=(...)) for that side, "
                        "e.g. view(torch_model, input_shape=(3, 32, 32)) (CLI: --input-shape "
                        "3,32,32, or --inputs FILE)") from exc
            fmt = "channels_first" if mine.framework == "torch" else None
            want = InputSpec(specs[0].shape, specs[0].dtype, fmt if len(specs[0].shape) >= 3
                             else None)
            views[i] = view(mine.model, input_shape=in_layout_of(specs[0], want).shape)
    return views[0], views[1]


def _output_channels_last(mv: ModelView, captured: dict[str, np.ndarray],
                          output: np.ndarray) -> np.ndarray:
    """A final output in channels-last, judged by the last layer that produced its shape."""
    output = np.asarray(output)
    if output.ndim < 3:
        return output
    for lv in reversed(mv.layers):
        got = captured.get(lv.path)
        if got is not None and got.shape == output.shape:
            return to_channels_last(output, channels_first(mv, lv, output.ndim))
    return to_channels_last(output, mv.framework == "torch")


class _CallableModule(types.ModuleType):
    """``weightgraft.verify(a, b)`` keeps working after ``import weightgraft.verify``.

    Importing the subpackage makes ``weightgraft.verify`` name this module instead of the
    function the package exports lazily; calling the module calls the function.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> VerifyResult:
        return verify(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
