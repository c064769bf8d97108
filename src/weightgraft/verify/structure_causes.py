"""Causes that live in a layer's definition rather than its weights: activation variants,
GRU ``reset_after``, and plain architecture differences (stride placement, a missing bias,
outputs of another shape). Registered into ``causes.CAUSES`` on import.

Example:
    >>> from weightgraft.verify.causes import CAUSES
    >>> {"activation_variant", "gru_reset_after", "architecture"} <= set(CAUSES)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Kind, Role
from .alignment import channels_first, following_activation, fused_activation, to_channels_last
from .causes import CONV_KINDS, Divergence, Finding, config_value, register_cause
from .compare import native_output
from .reference import VARIANTS

if TYPE_CHECKING:
    from ..modelview import LayerView, ModelView


def _activated(view: ModelView, lv: LayerView, captured: dict[str, np.ndarray],
               outputs: list[np.ndarray], last: LayerView | None) -> np.ndarray | None:
    """Where ``lv``'s pre-activation output gets its activation: the next layer or the output."""
    follow = following_activation(view, lv)
    if follow is not None and follow.path in captured:
        out = np.asarray(captured[follow.path])
        return to_channels_last(out, channels_first(view, lv, out.ndim))
    raw = np.asarray(captured[lv.path])
    if last is not None and last.path == lv.path and outputs and outputs[0].shape == raw.shape:
        return to_channels_last(outputs[0], channels_first(view, lv, raw.ndim))
    return None


def _best(z: np.ndarray, target: np.ndarray, family: dict[str, Any],
          d: Divergence) -> tuple[str, float]:
    errors = {label: d.error(target, f(z.astype(np.float64))) for label, f in family.items()}
    label = min(errors, key=errors.__getitem__)
    return label, errors[label]


@register_cause("activation_variant")
def activation_variant(d: Divergence) -> Finding | None:
    """The same activation name computed two ways (hard_sigmoid 0.2x+0.5 versus x/6+0.5)."""
    if d.la is None or d.lb is None:
        return None
    last_a, last_b = d.pairs[-1] if d.pairs else (None, None)
    triplets: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    raw_a = native_output(d.view_a, d.la, d.captured_a)
    raw_b = native_output(d.view_b, d.lb, d.captured_b)
    if d.outputs_only:
        out_a, out_b = d.ya, d.yb
        triplets += [(raw_a, out_a, out_b), (raw_b, out_a, out_b)]
    else:
        act_a, act_b = fused_activation(d.la), fused_activation(d.lb)
        if act_a and not act_b:
            triplets.append((raw_b, raw_a, _activated(d.view_b, d.lb, d.captured_b,
                                                      d.outputs_b, last_b)))
        if act_b and not act_a:
            triplets.append((raw_a, _activated(d.view_a, d.la, d.captured_a, d.outputs_a,
                                               last_a), raw_b))
    best: Finding | None = None
    for z, target_a, target_b in triplets:
        if target_a is None or z.shape != target_a.shape:
            continue
        for name, family in VARIANTS.items():
            label_a, err_a = _best(z, target_a, family, d)
            if not d.explains(err_a, target_a):
                continue
            if target_b is None or target_b.shape != z.shape:
                finding = Finding(False, f"a applies {name} {label_a}; where b applies its "
                                  "activation is not recorded", err_a, {"a": label_a})
            else:
                label_b, err_b = _best(z, target_b, family, d)
                finding = Finding(
                    label_a != label_b and d.explains(err_b, target_b),
                    f"activation variant: a computes {name} as {label_a}, b as {label_b}; "
                    f"use one definition on both sides (e.g. a custom activation)",
                    max(err_a, err_b),
                    {"family": name, "a": label_a, "b": label_b, "error_a": err_a,
                     "error_b": err_b, "error_before": d.before})
            if best is None or (finding.fits and not best.fits):
                best = finding
    return best


def _gru_weights(view: ModelView, lv: LayerView) -> tuple[np.ndarray, ...] | None:
    """(w_ih, w_hh, b_ih, b_hh) in PyTorch's gate order (r, z, n), from either framework."""
    arrays = {view.slots[k].role: view.read(k).astype(np.float64) for k in lv.slots}
    kernel, recurrent = arrays.get(Role.KERNEL), arrays.get(Role.RECURRENT_KERNEL)
    if kernel is None or recurrent is None:
        return None
    if view.framework == "torch":
        units = recurrent.shape[1]
        zero = np.zeros(3 * units)
        return (kernel, recurrent, arrays.get(Role.BIAS, zero),
                arrays.get(Role.RECURRENT_BIAS, zero))

    def torch_order(a: np.ndarray) -> np.ndarray:  # Keras gates (z, r, h) on the last axis
        z, r, h = np.split(a, 3, axis=-1)
        return np.concatenate([r, z, h], axis=-1)

    units = recurrent.shape[0]
    bias = arrays.get(Role.BIAS, np.zeros(3 * units))
    b_ih, b_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros(3 * units))
    return (torch_order(kernel).T, torch_order(recurrent).T, torch_order(b_ih),
            torch_order(b_hh))


@register_cause("gru_reset_after")
def gru_reset_after(d: Divergence) -> Finding | None:
    """Keras 1/2 GRUs apply the reset gate before the recurrent matmul, PyTorch's after.

    Re-computed in numpy with b's weights both ways, on b's input; a's reset_after is the
    one that reproduces a's output.
    """
    from .alignment import layer_input
    from .reference import ACTIVATIONS, activation_name, gru

    if d.la is None or d.lb is None or d.lb.kind is not Kind.GRU or d.outputs_only:
        return None
    weights = _gru_weights(d.view_b, d.lb)
    x = layer_input(d.view_b, d.lb, d.captured_b, d.inputs_b)
    if weights is None or x is None or np.ndim(x) != 3 or d.lb.config.get("bidirectional"):
        return None
    act = ACTIVATIONS.get(activation_name(d.lb.config.get("recurrent_activation")) or "sigmoid")
    errors: dict[bool, tuple[float, float]] = {}
    for reset_after in (True, False):
        seq = gru(x, *weights, reset_after=reset_after,
                  recurrent_activation=act or ACTIVATIONS["sigmoid"])
        errors[reset_after] = tuple(  # type: ignore[assignment]
            d.error(y, seq[:, -1] if np.ndim(y) == 2 else seq) for y in (d.ya, d.yb))
    ra = min(errors, key=lambda k: errors[k][0])
    rb = min(errors, key=lambda k: errors[k][1])
    fits = ra != rb and d.explains(errors[ra][0]) and d.explains(errors[rb][1], d.yb)
    return Finding(
        fits,
        f"GRU reset_after differs: a's {d.la.path} computes reset_after={ra}, b's {d.lb.path} "
        f"reset_after={rb} (PyTorch always resets after the recurrent matmul; Keras 1/2 GRUs "
        "before); build the Keras GRU with the other reset_after (and its bias layout)",
        max(errors[ra][0], errors[rb][1]),
        {"reset_after_a": ra, "reset_after_b": rb, "error_before": d.before,
         "error_a_reset_after_true": errors[True][0], "error_a_reset_after_false": errors[False][0],
         "error_b_reset_after_true": errors[True][1], "error_b_reset_after_false": errors[False][1],
         "config_reset_after_a": d.la.config.get("reset_after"),
         "config_reset_after_b": d.lb.config.get("reset_after")})


_STRUCTURE = {"strides": ("strides", "stride"), "kernel_size": ("kernel_size",),
              "dilation": ("dilation_rate", "dilation"), "groups": ("groups",)}


def _structure(lv: LayerView) -> dict[str, Any]:
    out = {}
    for name, keys in _STRUCTURE.items():
        value = config_value(lv, *keys)
        if value is not None:
            value = tuple(value) if isinstance(value, list | tuple) else value
            if isinstance(value, tuple) and len(set(value)) == 1:
                value = value[0]
            out[name] = value
    return out


def _has_bias(view: ModelView, lv: LayerView) -> bool:
    return any(view.slots[k].role is Role.BIAS for k in lv.slots)


@register_cause("architecture")
def architecture(d: Divergence) -> Finding | None:
    """The two layers are built differently: strides elsewhere, a bias missing, other shapes."""
    if d.la is None or d.lb is None or d.outputs_only:
        return None
    differences: list[str] = []
    evidence: dict[str, Any] = {"shape_a": d.row.shape_a, "shape_b": d.row.shape_b,
                                "error_before": d.before}
    sa, sb = _structure(d.la), _structure(d.lb)
    for name in sorted(set(sa) & set(sb)):
        if sa[name] != sb[name]:
            differences.append(f"{name} {sa[name]} in a's {d.la.path} but {sb[name]} in b's "
                               f"{d.lb.path}")
            evidence[f"{name}_a"], evidence[f"{name}_b"] = sa[name], sb[name]
    moved = []  # stride placement anywhere among the conv pairs (a ResNet block's 1x1 vs 3x3)
    for pa, pb in d.pairs:
        if pa.kind in CONV_KINDS and pb.kind in CONV_KINDS:
            s_a, s_b = _structure(pa).get("strides"), _structure(pb).get("strides")
            if s_a is not None and s_b is not None and s_a != s_b:
                moved.append(f"{pa.path} (kernel {_structure(pa).get('kernel_size')}): stride "
                             f"{s_a} in a, {s_b} in b")
    if moved:
        evidence["stride_placement"] = moved
    error_after = None
    bias_a, bias_b = _has_bias(d.view_a, d.la), _has_bias(d.view_b, d.lb)
    if bias_a != bias_b:
        differences.append(f"{d.la.path if bias_a else d.lb.path} has a bias, "
                           f"{d.lb.path if bias_a else d.la.path} has none")
        evidence.update(bias_a=bias_a, bias_b=bias_b)
        if bias_b and d.ya.shape == d.yb.shape:
            key = next(k for k in d.lb.slots if d.view_b.slots[k].role is Role.BIAS)
            error_after = d.error(d.ya, d.rerun_b({key: np.zeros(d.view_b.slots[key].shape)}))
            evidence["error_without_b_bias"] = error_after
    shapes_differ = d.row.shape_a != d.row.shape_b
    if shapes_differ:
        differences.insert(0, f"outputs have shapes {d.row.shape_a} (a) and {d.row.shape_b} (b)")
    if not differences:
        return None
    if moved:
        differences.append("stride placement differs: " + "; ".join(moved))
    fits = shapes_differ or (error_after is not None and d.explains(error_after)) or (
        bool(set(sa) & set(sb)) and sa != sb)
    return Finding(fits, "architecture differs: " + "; ".join(differences)
                   + "; the models are not twins, so no weight conversion can make them agree",
                   error_after, evidence)
