"""What ``verify`` finds: per-layer comparisons, the first divergence, and its diagnosis.

Results are frozen data; ``weightgraft.report.verify_view`` renders them.

Example:
    >>> row = LayerComparison("conv1", "conv1", "conv2d", 3e-7, 1e-7, True, (2, 8, 8, 4),
    ...                       (2, 8, 8, 4))
    >>> str(row)
    'conv1 ~ conv1: max abs 3e-07, max rel 1e-07 (pass)'
"""

from __future__ import annotations

from collections.abc import Mapping
import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: ``layer_a``/``layer_b`` of the row that compares the models' final outputs.
OUTPUT = "(output)"


@dataclass(frozen=True)
class LayerComparison:
    """One matched pair of layers (or the final outputs) compared on the same inputs.

    ``max_abs`` is the largest absolute difference; ``max_rel`` divides it by the largest
    magnitude of a's output (a layer-wide relative error that does not explode near zeros).
    ``passed`` means ``max|b - a| <= atol + rtol * max|a|`` over the layer's output.
    ``note`` says what was done to make the two comparable (layout moved, activation
    applied) or why they could not be compared (shapes differ).
    """

    layer_a: str
    layer_b: str
    kind: str
    max_abs: float
    max_rel: float
    passed: bool
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    note: str = ""

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        if self.shape_a != self.shape_b:
            return (f"{self.layer_a} ~ {self.layer_b}: shapes differ {self.shape_a} vs "
                    f"{self.shape_b} ({verdict})")
        return (f"{self.layer_a} ~ {self.layer_b}: max abs {self.max_abs:.3g}, "
                f"max rel {self.max_rel:.3g} ({verdict})")


@dataclass(frozen=True)
class Diagnosis:
    """The known cause that explains the first divergence, or ``unknown``.

    ``cause`` is a registered check's id (``flipped_kernel``, ``flatten_order``,
    ``batch_norm_epsilon``, ``padding``, ``activation_variant``, ``gru_reset_after``,
    ``architecture``) or ``unknown``. ``evidence`` holds the numbers: the error before and
    after re-computing the layer under the hypothesis, the configs that differ.
    ``tried`` lists every check that ran and its error under its hypothesis (``None``: the
    check did not apply to this layer).
    """

    cause: str
    explanation: str
    layer_a: str
    layer_b: str
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False)
    tried: Mapping[str, float | None] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return f"{self.cause}: {self.explanation}"


@dataclass(frozen=True)
class VerifyResult:
    """Everything ``verify`` found. ``passed`` is true when every compared layer and the final
    outputs agree within ``atol``/``rtol``.

    Example:
        >>> r = VerifyResult(passed=True, layers=(), first_divergence=None, diagnosis=None,
        ...                  outputs_max_abs=0.0)
        >>> r.passed, r.to_dict()["first_divergence"]
        (True, None)
    """

    passed: bool
    layers: tuple[LayerComparison, ...]
    first_divergence: LayerComparison | None
    diagnosis: Diagnosis | None
    outputs_max_abs: float
    outputs_max_rel: float = 0.0
    outputs: tuple[LayerComparison, ...] = ()
    atol: float = 1e-5
    rtol: float = 1e-4
    seed: int = 0
    input_shapes_a: tuple[tuple[int, ...], ...] = ()
    input_shapes_b: tuple[tuple[int, ...], ...] = ()
    framework_a: str = ""
    framework_b: str = ""
    unpaired_a: tuple[str, ...] = ()
    unpaired_b: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def max_abs_error(self) -> float:
        """The largest difference of any compared layer or output (for summaries)."""
        return max([self.outputs_max_abs, *(r.max_abs for r in self.layers)])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``graft verify --json`` prints exactly this)."""
        data = _plain(asdict(self))
        data["max_abs_error"] = _plain(self.max_abs_error)
        return data


def _plain(value: Any) -> Any:
    """JSON types only: tuples as lists, numpy scalars as Python, inf/nan as strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
