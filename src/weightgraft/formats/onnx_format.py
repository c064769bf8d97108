"""ONNX initializers: the model's weights, with kinds and roles from the ops that use them.

The graph is parsed with ``onnx.load(..., load_external_data=False)`` (extra ``onnx``):
inline initializers arrive with the protobuf (ONNX has no partial parse) and are turned
into arrays on ``load()``; initializers stored in external data files are read on
``load()`` from just their byte range. An external ``location`` must name a file inside
the model's folder: absolute paths, ``..`` and links that lead elsewhere are refused
(``UnsafeFileError``), as is a range that runs past the data file.

Descriptions come from the consuming op: ``Conv`` weights are (out, in, *kernel), the
PyTorch layout (``Convention.TORCH``); ``Gemm`` with ``transB=1`` holds (out, in) (torch),
without it and ``MatMul`` hold (in, out) (keras); ``BatchNormalization`` inputs 1..4 are
gamma, beta, moving mean, moving variance. ONNX recurrent weights (gate order i,o,f,c for
LSTM; z,r,h for GRU) match neither framework, so their convention stays ``unknown``.

Example:
    >>> ck = read(Path("model.onnx"))                        # doctest: +SKIP
    >>> ck["fc.weight"].kind, ck["fc.weight"].convention      # doctest: +SKIP
    (<Kind.DENSE: 'dense'>, <Convention.TORCH: 'torch'>)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Checkpoint, Convention, Kind, Role, TensorEntry
from ..errors import FormatError, UnsafeFileError, require
from ..naming import describe_entries
from .safetensors_format import range_loader

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

NAME = "onnx"
EXTENSIONS = (".onnx",)

# Fields a ModelProto may start with after ir_version (field 1, varint): producer_name (2),
# producer_version (3), domain (4), model_version (5), doc_string (6), graph (7), opset (8).
_NEXT_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}
_BFLOAT16 = 16  # TensorProto.BFLOAT16
_EXTERNAL = 1  # TensorProto.EXTERNAL


def sniff(path: Path, head: bytes) -> bool:
    """Protobuf starting with a small ``ir_version`` varint, or any file named ``.onnx``."""
    if path.name.lower().endswith(".onnx"):
        return True
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and \
        head[2] in _NEXT_FIELD_TAGS


@dataclass(frozen=True)
class _Use:
    """How one op uses an initializer: the description it implies."""

    layer: str
    kind: Kind
    role: Role
    convention: Convention


def _conv_kind(rank: int, transpose: bool) -> Kind:
    table = ({3: Kind.CONV1D_TRANSPOSE, 4: Kind.CONV2D_TRANSPOSE, 5: Kind.CONV3D_TRANSPOSE}
             if transpose else {3: Kind.CONV1D, 4: Kind.CONV2D, 5: Kind.CONV3D})
    return table.get(rank, Kind.OTHER)


def _attr(node: NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


_RECURRENT = {"LSTM": Kind.LSTM, "GRU": Kind.GRU, "RNN": Kind.SIMPLE_RNN}
_RECURRENT_ROLES = {1: Role.KERNEL, 2: Role.RECURRENT_KERNEL, 3: Role.BIAS}
_NORM_ROLES = {1: Role.GAMMA, 2: Role.BETA, 3: Role.MOVING_MEAN, 4: Role.MOVING_VARIANCE}


def _use(node: NodeProto, index: int, dims: dict[str, tuple[int, ...]], layer: str) -> _Use | None:
    """The description implied by ``node`` taking an initializer as input ``index``."""
    op = node.op_type
    name = node.input[index]
    rank = len(dims[name])
    torch, keras, unknown = Convention.TORCH, Convention.KERAS, Convention.UNKNOWN
    if op in ("Conv", "ConvTranspose") and index in (1, 2):
        weight = node.input[1]
        kind = _conv_kind(len(dims.get(weight, ())), op == "ConvTranspose")
        shape = dims.get(weight, ())
        group = _attr(node, "group", 1)
        if op == "Conv" and kind is Kind.CONV2D and group > 1 and shape[1] == 1 and \
                group == shape[0]:
            kind = Kind.DEPTHWISE_CONV2D
        role = Role.BIAS if index == 2 else (
            Role.DEPTHWISE_KERNEL if kind is Kind.DEPTHWISE_CONV2D else Role.KERNEL)
        return _Use(layer, kind, role, torch)
    if op == "Gemm" and index in (1, 2) and len(dims.get(node.input[1], ())) == 2:
        if index == 2:
            return _Use(layer, Kind.DENSE, Role.BIAS, torch)
        return _Use(layer, Kind.DENSE, Role.KERNEL, torch if _attr(node, "transB", 0) else keras)
    if op == "MatMul" and index == 1 and rank == 2:
        return _Use(layer, Kind.DENSE, Role.KERNEL, keras)
    # Norm vectors and embedding tables are laid out as PyTorch keeps them.
    if op == "BatchNormalization" and index in _NORM_ROLES:
        return _Use(layer, Kind.BATCH_NORM, _NORM_ROLES[index], torch)
    if op == "LayerNormalization" and index in (1, 2):
        return _Use(layer, Kind.LAYER_NORM, _NORM_ROLES[index], torch)
    if op == "Gather" and index == 0 and rank == 2:
        return _Use(layer, Kind.EMBEDDING, Role.EMBEDDINGS, torch)
    if op == "PRelu" and index == 1:
        return _Use(layer, Kind.PRELU, Role.ALPHA, torch)
    if op in _RECURRENT and index in _RECURRENT_ROLES:
        return _Use(layer, _RECURRENT[op], _RECURRENT_ROLES[index], unknown)
    return None


def _layer_name(init_name: str, node: NodeProto) -> str:
    """``features.0.weight`` -> ``features.0``; exporter names (``onnx::Conv_15``) -> node name."""
    if "." in init_name and "::" not in init_name:
        return init_name.rsplit(".", 1)[0]
    return node.name or (node.output[0] if node.output else init_name)


def _describe(model: ModelProto, dims: dict[str, tuple[int, ...]]) -> dict[str, _Use]:
    uses: dict[str, _Use] = {}
    producers: dict[str, tuple[NodeProto, str]] = {}  # output -> (MatMul node, weight)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in dims and name not in uses:
                found = _use(node, index, dims, _layer_name(name, node))
                if found is not None:
                    uses[name] = found
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in uses:
            producers[node.output[0]] = (node, node.input[1])
    # MatMul + Add(initializer) is how exporters write a Linear with bias.
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = node.input
        src, bias = (a, b) if a in producers else (b, a)
        if src in producers and bias in dims and bias not in uses and len(dims[bias]) == 1:
            kernel = uses[producers[src][1]]
            uses[bias] = _Use(kernel.layer, Kind.DENSE, Role.BIAS, kernel.convention)
    return uses


def _external_loader(path: Path, base: Path, init: TensorProto, dtype: np.dtype,
                     shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    info = {kv.key: kv.value for kv in init.external_data}
    location = info.get("location", "")
    target = (base / location)
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise UnsafeFileError(path, f"external data location {location!r} leaves the model's "
                              "folder", tensor=init.name, expected="a file beside the model",
                              fix="keep external data files in the model's folder")
    resolved = target.resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise UnsafeFileError(path, f"external data location {location!r} links outside the "
                              "model's folder", tensor=init.name)
    if not resolved.is_file():
        raise FormatError(path, f"external data file {location!r} is missing", tensor=init.name,
                          fix="copy the data file next to the model")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise FormatError(path, f"external data offset/length are not integers: {info}",
                          tensor=init.name) from None
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = resolved.stat().st_size
    if offset < 0 or (length is not None and length != need) or offset + need > size:
        raise FormatError(path, f"external data range offset={offset} length={length} does "
                          f"not fit {need:,} bytes in {location!r} ({size:,} bytes)",
                          tensor=init.name, fix="the data file is truncated or from another "
                          "export")
    return range_loader(resolved, offset, shape, dtype.newbyteorder("<").str, init.name)


def _inline_loader(path: Path, init: TensorProto, bf16: bool,
                   shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from onnx import numpy_helper

        try:
            array = numpy_helper.to_array(init)
        except Exception as exc:  # onnx reports count mismatches as plain errors
            raise FormatError(path, f"initializer data do not fit its shape {shape}: {exc}",
                              tensor=init.name, fix="export the model again") from None
        return array.view(np.uint16) if bf16 else np.asarray(array)

    return load


def _load_model(path: Path) -> ModelProto:
    onnx = require("onnx", "onnx", "reading ONNX files")
    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError/RuntimeError variants
        raise FormatError(path, f"not a readable ONNX model: {type(exc).__name__}: {exc}",
                          expected="an ONNX ModelProto",
                          fix="the file is truncated or not ONNX; export it again") from None


def read(path: Path) -> Checkpoint:
    """Open an ONNX model's initializers lazily (external data on ``load()``).

    Example:
        >>> with read(Path("resnet18.onnx")) as ck:                   # doctest: +SKIP
        ...     print(ck.framework, len(ck))
        pytorch 102
    """
    path = Path(path)
    model = _load_model(path)
    helper = require("onnx.helper", "onnx", "reading ONNX files")
    base = path.parent
    dims = {init.name: tuple(int(d) for d in init.dims) for init in model.graph.initializer}
    uses = _describe(model, dims)
    entries: list[TensorEntry] = []
    extras: dict[str, Any] = {}
    for init in model.graph.initializer:
        shape = dims[init.name]
        if any(d < 0 for d in shape):
            raise FormatError(path, f"negative dimension in {shape}", tensor=init.name)
        bf16 = init.data_type == _BFLOAT16
        try:
            dtype = np.dtype("uint16" if bf16 else helper.tensor_dtype_to_np_dtype(init.data_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in "biufc":
            extras[init.name] = f"initializer of ONNX data type {init.data_type}, not read"
            continue
        if init.data_location == _EXTERNAL:
            loader = _external_loader(path, base, init, dtype, shape)
        else:
            need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if init.HasField("raw_data") and len(init.raw_data) != need:
                raise FormatError(path, f"initializer holds {len(init.raw_data):,} bytes but "
                                  f"{dtype} {shape} needs {need:,}", tensor=init.name,
                                  expected="raw data matching dtype x shape")
            loader = _inline_loader(path, init, bf16, shape)
        use = uses.get(init.name)
        fields: dict[str, Any] = {}
        if use is not None:
            fields = {"layer": use.layer, "kind": use.kind, "role": use.role,
                      "convention": use.convention}
        entries.append(TensorEntry(key=init.name, shape=shape,
                                   dtype="bfloat16" if bf16 else dtype.name, loader=loader,
                                   **fields))
    entries = describe_entries(entries, None)  # initializers no op explained: names only
    opsets = {op.domain or "ai.onnx": int(op.version) for op in model.opset_import}
    return Checkpoint(
        entries, format=NAME, path=str(path), framework=model.producer_name or None,
        framework_version=model.producer_version or None, convention=Convention.TORCH,
        convention_reason="ONNX stores Conv weights (out, in, *kernel), the PyTorch layout; "
        "each tensor's own convention follows the op that uses it (MatMul weights are "
        "(in, out))", metadata={"ir_version": int(model.ir_version), "opset": opsets},
        extras=extras)
