"""Rendering of an ``Inspection``: a header panel, a layer table, totals; or JSON.

Readable in an 80-column terminal: long cells wrap inside their column instead of pushing
the table off screen. A Theano-era file says so on the very first line.

Example:
    >>> from rich.console import Console                        # doctest: +SKIP
    >>> render(weightgraft.inspect("model.safetensors"), Console())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console

    from ..inspection import Inspection, LayerSummary, TensorInfo

__all__ = ["human_size", "render", "renderables", "to_json"]


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def human_size(nbytes: float) -> str:
    """A byte count as people read it (binary units, as ``ls -lh``).

    Example:
        >>> human_size(624), human_size(6_800), human_size(1_952_040)
        ('624 B', '6.6 KB', '1.9 MB')
    """
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"  # pragma: no cover


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _theano_banner(ins: Inspection) -> Text | None:
    """The first line of a Theano-era file's report, built from what the file records."""
    h = ins.header
    if not h.theano_era:
        return None
    ordering = h.metadata.get("dim_ordering") or {
        "channels_first": "th", "channels_last": "tf"}.get(str(h.data_format), h.data_format)
    facts = [f"Keras {h.framework_version}" if h.framework_version else "Keras 1/2",
             "Theano backend"]
    if ordering:
        facts.append(f"dim ordering '{ordering}'")
    head = f"[bold yellow]! Theano-era file[/] [yellow]({', '.join(facts)}):[/] "
    if "flipped_conv_kernels" in h.theano_concerns:
        layout = {"th": " (stored out, in, rows, cols)", "tf": " (stored rows, cols, in, out)"}
        return Text.from_markup(
            f"{head}conv kernels are flipped for true convolution"
            f"{layout.get(str(ordering), '')}; flip them for any other framework.")
    # No conv kernels: saying "flip them" would contradict the notes; say what does matter.
    matters = []
    if "keras1_lstm_gates" in h.theano_concerns:
        matters.append("its LSTMs keep one array per gate in Keras 1 order i, c, f, o")
    if "hard_sigmoid" in h.theano_concerns:
        matters.append("recurrent layers default to hard_sigmoid = clip(0.2x + 0.5, 0, 1), "
                       "unlike Keras 3 and PyTorch")
    if not matters:
        return Text.from_markup(f"{head}no conv kernels, so no layout change is needed.")
    return Text.from_markup(f"{head}no conv kernels to flip, but {'; '.join(matters)}.")


def _header_panel(ins: Inspection) -> Panel:
    h = ins.header
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("source", h.source)
    grid.add_row("format", h.format)
    if h.framework:
        grid.add_row("framework", " ".join(x for x in (h.framework, h.framework_version) if x))
    if h.backend:
        grid.add_row("backend", h.backend)
    if h.data_format:
        grid.add_row("data format", h.data_format)
    dtypes = sorted({t.dtype for t in ins.tensors})
    if dtypes:
        grid.add_row("dtype" if len(dtypes) == 1 else "dtypes", ", ".join(dtypes))
    conv = h.convention + (f" [dim]({h.convention_reason})[/]" if h.convention_reason else "")
    grid.add_row("convention", Text.from_markup(conv))
    if ins.filter is not None:
        grid.add_row("filter", f"{ins.filter!r}: {ins.totals.tensors + ins.totals.shared_tensors}"
                               f" of {ins.tensors_in_source} tensors")
    for note in h.notes:
        grid.add_row("[yellow]note[/]", Text(note, style="yellow"))
    return Panel(grid, title="[bold]weightgraft inspect[/]", title_align="left",
                 box=box.ROUNDED, expand=False)


def _role(t: TensorInfo) -> str:
    if t.role == "other":  # an unnamed role: the key's last component says more than "other"
        return t.key.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return t.role if t.part is None else f"{t.role}:{t.part}"


def _labels(layer: LayerSummary) -> list[str]:
    """Each tensor's row label: its role, and its own name where a role repeats (a 2-layer
    LSTM holds two kernels: say which is which)."""
    roles = [_role(t) for t in layer.tensors]
    return [r if roles.count(r) == 1 else f"{r} ({_leaf(t.key, layer.name)})"
            for r, t in zip(roles, layer.tensors)]


def _leaf(key: str, layer: str) -> str:
    """The key without its layer's prefix: ``weight_ih_l1`` of ``lstm.weight_ih_l1``."""
    for sep in (".", "/"):
        if layer and key.startswith(layer + sep):
            return key[len(layer) + 1:]
    return key


def _state(t: TensorInfo) -> str:
    marks = ["buffer" if t.buffer else "frozen" if t.trainable is False else ""]
    if t.shared:
        marks.append(f"[magenta]tied to {t.aliases[0]}[/]" if t.aliases else "[magenta]tied[/]")
    return " ".join(m for m in marks if m)


def _column_widths(ins: Inspection, width: int) -> list[int]:
    """Fit the four columns into ``width``: content width where it fits; otherwise the
    third column (dtype/output) folds first, then formulas, kinds and names."""
    def longest(texts: list[str], cap: int) -> int:
        return min(max((len(t) for t in texts), default=4), cap)

    layers = ins.layers
    tensors = [t for layer in layers for t in layer.tensors]
    want = [
        longest([layer.name for layer in layers]
                + ["  " + label for layer in layers for label in _labels(layer)]
                + ["Layer / tensor"], 28),
        longest([layer.class_name or layer.kind for layer in layers]
                + [_shape(t.shape) for t in tensors] + ["Kind / shape"], 24),
        longest([_shape(s) for layer in layers for s in layer.output_shapes]
                + [f"{t.dtype} {_state(t)}".strip() for t in tensors]
                + ["Output / dtype" if ins.model is not None else "Dtype"], 24),
        longest([layer.formula for layer in layers] + ["Params"], 30),
    ]
    floor = [14, 12, 14, 20]
    excess = sum(want) + 9 - width  # three gaps of three characters between four columns
    for i in (2, 3, 1, 0):
        if excess <= 0:
            break
        cut = min(excess, want[i] - floor[i])
        want[i] -= max(cut, 0)
        excess -= max(cut, 0)
    return want


def _fold_formula(formula: str, width: int) -> str:
    """Break a long formula between its terms, never inside one, and keep "= N" whole.

    Example:
        >>> print(_fold_formula("128x1x512x1 + 128 = 65,664", 20))
        128x1x512x1 + 128
        = 65,664
    """
    if len(formula) <= width:
        return formula
    tokens: list[str] = []
    for word in formula.split(" "):
        if tokens and tokens[-1] in ("+", "="):  # an operator starts the term it introduces
            tokens[-1] += " " + word
        else:
            tokens.append(word)
    lines = [tokens[0]]
    for token in tokens[1:]:
        if len(lines[-1]) + 1 + len(token) <= width:
            lines[-1] += " " + token
        else:
            lines.append(token)  # a term longer than the column still folds (rare)
    return "\n".join(lines)


def _layer_table(ins: Inspection, width: int = 80) -> Table:
    """A bold row per layer (name, kind, output shape, parameter formula), then one indented
    row per tensor (role, shape, dtype): narrow enough for 80 columns."""
    is_model = ins.model is not None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    widths = _column_widths(ins, width)
    names = ("Layer / tensor", "Kind / shape", "Output / dtype" if is_model else "Dtype", "Params")
    for i, (header, w) in enumerate(zip(names, widths)):
        table.add_column(header, overflow="fold", width=w, justify="right" if i == 3 else "left")
    for layer in ins.layers:
        name = Text(layer.name or "(top level)", style="bold")
        if layer.shared:
            name.append(f" x{layer.calls}", style="magenta")
        # The class says more than the kind where there is one (BatchNormalization, not
        # batch_norm); a weightless layer's kind is always "other".
        kind = Text(layer.class_name or layer.kind)
        output = "\n".join(_shape(s) for s in layer.output_shapes) if is_model else ""
        table.add_row(name, kind, output,
                      _fold_formula(layer.formula, widths[3]) if layer.tensors else "0")
        for t, label in zip(layer.tensors, _labels(layer)):
            state = _state(t)
            table.add_row(Text("  " + label, style="cyan"), _shape(t.shape),
                          Text.from_markup(f"[dim]{t.dtype}[/]" + (f" {state}" if state else "")),
                          "")
    return table


def _data_table(ins: Inspection) -> Table:
    """A file with no model weights (saved inputs, outputs, activations): its tensors as
    stored, since there are no layers to group them under."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("Key", overflow="fold", ratio=5)
    table.add_column("Shape", overflow="fold", ratio=2)
    table.add_column("Dtype", no_wrap=True)
    table.add_column("Values", justify="right", no_wrap=True)
    for t in ins.other_tensors:
        table.add_row(t.key, _shape(t.shape), t.dtype, f"{t.params:,}")
    return table


def _tensor_role(t: TensorInfo) -> str:
    if t.group == "other" and t.role == "other":
        return "not a model weight"
    role = t.role if t.part is None else f"{t.role}:{t.part}"
    return role if t.group == "model" else f"{role} ({t.group})"


def _tensor_table(ins: Inspection) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("Key", overflow="fold", ratio=5)
    table.add_column("Role", overflow="fold", ratio=2)
    table.add_column("Shape", overflow="fold", ratio=2)
    table.add_column("Dtype", no_wrap=True)
    table.add_column("Params", justify="right", no_wrap=True)
    for t in [*ins.tensors, *ins.other_tensors]:
        role = " ".join(x for x in (_tensor_role(t), _state(t)) if x)
        table.add_row(t.key, Text.from_markup(role), _shape(t.shape), t.dtype, f"{t.params:,}")
    return table


def _totals_grid(ins: Inspection) -> Table:
    tot = ins.totals
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(style="dim", overflow="fold")
    grid.add_row("Total params", f"{tot.total:,}", f"{_count(tot.tensors, 'tensor')}, {human_size(tot.nbytes)}")
    if tot.trainable or (tot.non_trainable and not tot.unknown):
        grid.add_row("Trainable", f"{tot.trainable:,}", "")
    if tot.trainable or tot.non_trainable:
        grid.add_row("Non-trainable", f"{tot.non_trainable:,}",
                     f"of which buffers {tot.buffers:,}" if tot.buffers else "")
    if tot.unknown and (tot.trainable or tot.non_trainable):
        grid.add_row("Not stated", f"{tot.unknown:,}", "the source does not say")
    if tot.buffers:  # files too: statistics are buffers there as in a live model
        grid.add_row("Parameters", f"{tot.parameters:,}", "without buffers")
    if tot.shared_tensors:
        grid.add_row("Shared", f"{tot.shared_tensors}", "tied tensors, counted once")
    if ins.model is not None:
        m = ins.model
        grid.add_row("Layer objects", f"{m.layer_objects:,}", "")
        if m.weighted_depth is not None:
            grid.add_row("Weighted depth", f"{m.weighted_depth}",
                         "conv/dense layers on the longest input-to-output path")
        if m.shared_layers:
            grid.add_row("Shared layers", f"{len(m.shared_layers)}", ", ".join(m.shared_layers))
    if ins.optimizer is not None:
        o = ins.optimizer
        grid.add_row("Optimizer state", f"{o.params:,}",
                     f"{_count(o.tensors, 'tensor')}, {human_size(o.nbytes)}; not part of the model")
    if ins.other_tensors:
        grid.add_row("Other tensors", f"{sum(t.params for t in ins.other_tensors):,}",
                     f"{_count(len(ins.other_tensors), 'tensor')} outside the model")
    return grid


def _extras(ins: Inspection) -> RenderableType | None:
    if not ins.extras:
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in ins.extras.items():
        grid.add_row(key, Text(str(value)))
    return Group(Text("Other values in the file", style="bold"), grid)


def renderables(ins: Inspection, *, tensors: bool = False, width: int = 80
                ) -> list[RenderableType]:
    """The pieces of the report in order: banner, header, table, totals, extras."""
    parts: list[RenderableType] = []
    banner = _theano_banner(ins)
    if banner is not None:
        parts.append(banner)
    parts.append(_header_panel(ins))
    if tensors:
        parts.append(_tensor_table(ins))
    elif not ins.layers and ins.other_tensors:  # nothing to group by layer: show the data
        parts.append(_data_table(ins))
    else:
        parts.append(_layer_table(ins, width))
    parts.append(_totals_grid(ins))
    extras = _extras(ins)
    if extras is not None:
        parts.append(extras)
    return parts


def render(ins: Inspection, console: Console, *, tensors: bool = False) -> None:
    """Print an inspection: header panel, layer table (or ``tensors=True``: flat list), totals.

    Example:
        >>> render(weightgraft.inspect("tiny.pth"), Console(width=80))   # doctest: +SKIP
    """
    for part in renderables(ins, tensors=tensors, width=console.width):
        console.print(part)


def to_json(ins: Inspection) -> dict[str, Any]:
    """An inspection as plain JSON types (totals also under ``total_params`` for scripts).

    Example:
        >>> to_json(weightgraft.inspect("tiny.pth"))["totals"]["total"]   # doctest: +SKIP
        487102
    """
    data = _plain(ins)
    data["total_params"] = ins.totals.total
    return data


def _tensor_dict(t: TensorInfo) -> dict[str, Any]:
    # Ten thousand tensors: build their dicts directly rather than by generic recursion.
    d = dict(t.__dict__)
    d["shape"] = list(t.shape)
    d["aliases"] = list(t.aliases)
    return d


def _layer_dict(layer: LayerSummary) -> dict[str, Any]:
    d = dict(layer.__dict__)
    d["tensors"] = [_tensor_dict(t) for t in layer.tensors]
    d["output_shapes"] = [list(s) for s in layer.output_shapes]
    return d


def _plain(value: Any) -> Any:
    from ..inspection import LayerSummary, TensorInfo

    if isinstance(value, LayerSummary):
        return _layer_dict(value)
    if isinstance(value, TensorInfo):
        return _tensor_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
