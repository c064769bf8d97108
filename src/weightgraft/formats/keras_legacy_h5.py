"""Keras 1.x / 2.x HDF5: ``save_weights`` files and full models (``model_weights`` group).

Layout (Keras 2 ``keras/engine/saving.py``, Keras 1 ``keras/engine/topology.py``): the
weights group lists its layers in the attribute ``layer_names`` (split into ``layer_names0``,
``layer_names1``, ... when it outgrows HDF5's 64 KB attribute limit); each layer group lists
its datasets in ``weight_names``. Keras 2 adds ``keras_version`` and ``backend``; a file
without ``keras_version`` is Keras 1. Full models add ``model_config``, ``training_config``
(JSON) and an ``optimizer_weights`` group.

How the convention is decided (what Keras itself did when loading, ``preprocess_weights_for
_loading`` and ``_need_convert_kernel``):

- Theano computes true convolution (``T.nnet.conv2d`` flips the kernel), TensorFlow and CNTK
  cross-correlation. A file is *Theano-era* when ``backend == 'theano'`` (Keras 2), or when a
  Keras 1 file (which never records its backend) has weight names without the ``:0`` suffix
  TensorFlow gives every variable. Its convolution kernels are flipped: entry convention
  ``theano``. Keras 2 itself only flipped when ``backend`` was recorded, so Keras 1 Theano
  files loaded into Keras 2 silently came out wrong.
- Kernel storage order: Keras 1 stored conv kernels ``(out, in, rows, cols)`` under
  ``dim_ordering='th'`` and ``(rows, cols, in, out)`` under ``'tf'``; Keras 2 always stores
  ``(rows, cols, in, out)`` whatever ``data_format`` says. Each conv layer's
  ``LayerInfo.config`` gets ``kernel_layout`` (letters: o=out, i=in, d/h/w spatial, 1 a unit
  axis) and ``flipped``; Keras 1 layers also ``dim_ordering`` ('th'/'tf'); every layer gets
  ``keras_version``. An unflipped ``(out, in, rows, cols)``
  kernel (Keras 1, TensorFlow backend, 'th') is marked ``torch``: that is PyTorch's layout.

Example:
    >>> import weightgraft as wg                                          # doctest: +SKIP
    >>> ck = wg.open_checkpoint("mnist_cnn_th_keras_1_weights.h5")      # doctest: +SKIP
    >>> ck.convention, ck["convolution2d_1/convolution2d_1_W"].shape    # doctest: +SKIP
    (<Convention.THEANO: 'theano'>, (32, 1, 3, 3))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..checkpoint import Checkpoint, Convention, Group, Kind, LayerInfo, Role, TensorEntry
from ..errors import FormatError
from .hdf5_access import (
    DatasetHeader, H5Index, dataset_loader, exc_summary, is_hdf5, open_h5,
)
from .keras_names import (
    CONTAINER_CLASSES, CONV_KINDS, WRAPPER_CLASSES, config_index, kind_for_config,
    kind_for_layer_name, kind_from_tensors, owner_of_variable, role_for_variable,
)

NAME = "keras-h5"
EXTENSIONS = (".h5", ".hdf5", ".keras.h5")
ALIASES = ("keras-legacy", "h5", "hdf5")

MAX_JSON_BYTES = 16 << 20
_STORED_LAYOUT = {  # (kind, keras major, dim_ordering) -> how the kernel's axes are stored
    (Kind.CONV2D, 1, "th"): "oihw", (Kind.CONV2D, 1, "tf"): "hwio",
    (Kind.CONV3D, 1, "th"): "oidhw", (Kind.CONV3D, 1, "tf"): "dhwio",
    (Kind.CONV2D_TRANSPOSE, 1, "th"): "oihw", (Kind.CONV2D_TRANSPOSE, 1, "tf"): "hwio",
    (Kind.CONV1D, 2, ""): "wio", (Kind.CONV2D, 2, ""): "hwio", (Kind.CONV3D, 2, ""): "dhwio",
    (Kind.CONV2D_TRANSPOSE, 2, ""): "hwoi", (Kind.CONV1D_TRANSPOSE, 2, ""): "woi",
    (Kind.CONV3D_TRANSPOSE, 2, ""): "dhwoi",
}


def sniff(path: Path, head: bytes) -> bool:
    """Any HDF5 file the Keras 3 reader did not claim (broken ones included, to explain them).

    Example:
        >>> sniff(Path("x.h5"), b"\\x89HDF\\r\\n\\x1a\\n" + bytes(8))
        True
    """
    return is_hdf5(head)


def read_str_list(index: H5Index, group: str, name: str) -> list[str]:
    """A list-of-names attribute, joining Keras's chunks ``name0``, ``name1``, ...

    Example:
        >>> read_str_list(H5Index(h5file, path), "", "layer_names")   # doctest: +SKIP
        ['conv1', 'dense_1']
    """
    whole = index.attr(group, name)
    chunks = [whole] if whole is not None else []
    i = 0
    while whole is None and (chunk := index.attr(group, f"{name}{i}")) is not None:
        chunks.append(chunk)
        i += 1
    out: list[str] = []
    for chunk in chunks:
        for item in np.atleast_1d(np.asarray(chunk, dtype=object)).ravel():
            if isinstance(item, bytes):
                out.append(item.decode("utf-8", "replace"))
            elif isinstance(item, str):
                out.append(item)
            elif not (isinstance(item, float) and np.isnan(item)):
                raise FormatError(index.path, f"attribute {name!r} of /{group} holds {item!r}",
                                  tensor="/" + group, expected="a list of names (strings)")
    return out


def _str_attr(obj: h5py.Group | h5py.File, name: str) -> str | None:
    value = obj.attrs.get(name, None)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_attr(f: h5py.File, name: str, path: Path) -> dict[str, Any] | None:
    text = _str_attr(f, name)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FormatError(path, f"attribute {name!r} is not valid JSON ({exc_summary(exc)})",
                          tensor=name, expected="the JSON Keras wrote") from exc
    return value if isinstance(value, dict) else None


def _sidecar_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A model config saved beside a weights-only file (``x_weights.h5`` + ``x_config.json``)."""
    stem = path.name.rsplit(".", 1)[0]
    names = [stem.replace("_weights", "_config") + ".json", stem + "_config.json", stem + ".json"]
    for name in dict.fromkeys(names):
        candidate = path.with_name(name)
        try:
            if not candidate.is_file() or candidate.stat().st_size > MAX_JSON_BYTES:
                continue
            value = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and "class_name" in value and "config" in value:
            return value, name
    return None, None


def read(path: Path) -> Checkpoint:
    """Read a Keras 1/2 HDF5 file lazily (any other HDF5 file: every dataset, undescribed).

    Example:
        >>> ck = read(Path("crepe/model-tiny.h5"))                  # doctest: +SKIP
        >>> ck.framework_version, ck.backend                          # doctest: +SKIP
        ('2.1.5', 'tensorflow')
    """
    path = Path(path)
    f = open_h5(path, path)
    try:
        ck = _read_open(f, path)
    except BaseException:
        f.close()
        raise
    ck._closers.append(f.close)
    return ck


def _read_open(f: h5py.File, path: Path) -> Checkpoint:
    index = H5Index(f, path)  # refuses links and external storage anywhere in the file
    if "model_weights" in index.groups:
        wg, base = f["model_weights"], "model_weights"
    elif "layer_names" in f.attrs or "layer_names0" in f.attrs:
        wg, base = f, ""
    else:
        return _plain_hdf5(f, index, path)
    model_config = _json_attr(f, "model_config", path)
    training_config = _json_attr(f, "training_config", path)
    config_source = "model_config attribute" if model_config else None
    if model_config is None:
        model_config, config_source = _sidecar_config(path)
    version = _str_attr(wg, "keras_version") or _str_attr(f, "keras_version")
    backend = _str_attr(wg, "backend") or _str_attr(f, "backend")
    major = 1 if version is None or version.startswith("1") else 2
    configs = config_index(model_config)

    raw: list[tuple[str, str, dict[str, Any], list[tuple[str, DatasetHeader]]]] = []
    for lname in read_str_list(index, base, "layer_names"):
        group = f"{base}/{lname}" if base else lname
        index.require_group(group, what="layer group (listed in layer_names)")
        cls, cfg = configs.get(lname, ("", {}))
        datasets = [(w, index.dataset(group, w, what=f"weight of layer {lname!r} (listed in "
                                                     "weight_names)"))
                    for w in read_str_list(index, group, "weight_names")]
        raw.append((lname, cls, cfg, datasets))
    names = [w for *_, ds in raw for w, _ in ds]
    if backend == "theano":
        theano, why = True, "the file's backend attribute is 'theano'"
    elif major == 1 and backend is None and names and not any(":" in n for n in names):
        theano, why = True, ("Keras 1 file (no backend attribute) whose weight "
                             "names lack the ':0' suffix TensorFlow gives every variable, so it "
                             "was saved with the Theano backend")
    else:
        theano = False
        why = (f"backend attribute is {backend!r}" if backend else
               "Keras 1 file (no backend attribute) whose weight names carry the ':0' "
               "suffix TensorFlow gives every variable" if any(":" in n for n in names)
               else "no backend recorded and no Theano evidence")

    entries: list[TensorEntry] = []
    layers: list[LayerInfo] = []
    orderings: dict[str, str] = {}
    for lname, cls, cfg, datasets in raw:
        info = _describe_layer(lname, cls, cfg, datasets, configs, major, theano, f, path,
                               entries)
        info.config["keras_version"] = version or "1"
        if o := info.config.get("dim_ordering") or _ordering_of(cfg):
            orderings[lname] = o
        layers.append(info)
    for lname, cfg in ((n, c) for n, (_, c) in configs.items() if "/" not in n):
        o = _ordering_of(cfg)
        if o:
            orderings.setdefault(lname, o)
    _add_optimizer(f, index, path, entries)

    ordering = None
    if orderings:
        values = set(orderings.values())
        ordering = values.pop() if len(values) == 1 else "mixed"
    flipped = any(e.convention is Convention.THEANO for e in entries)
    convention = Convention.THEANO if theano else Convention.KERAS
    reason = f"Keras {version}: {why}" if version else why
    if ordering:
        src = next((li.config.get("dim_ordering_source") for li in layers
                    if li.config.get("dim_ordering_source")), config_source or "model config")
        said = f"dim_ordering {ordering!r}" if major == 1 else "data_format " + repr(
            {"th": "channels_first", "tf": "channels_last"}.get(ordering, ordering))
        reason += f"; {said} ({src})"
    if flipped:
        reason += "; conv kernels are flipped for true convolution (entry convention 'theano')"
    if any(e.convention is Convention.TORCH for e in entries):
        reason += ("; conv kernels stored (out, in, rows, cols) and not flipped "
                   "(entry convention 'torch')")
    notes = _notes(theano, flipped, ordering, major, layers)
    data_format = {"th": "channels_first", "tf": "channels_last"}.get(ordering or "")
    metadata: dict[str, Any] = {"saved": "model" if wg is not f else "weights"}
    if ordering:
        metadata["dim_ordering"] = ordering
    if config_source:
        metadata["config_source"] = config_source
    if training_config is not None:
        metadata["training_config"] = training_config
    return Checkpoint(entries, format=NAME, path=str(path), framework="keras",
                      framework_version=version or "1", backend=backend or (
                          "theano" if theano else None),
                      data_format=data_format, convention=convention, convention_reason=reason,
                      model_config=model_config, layers=layers, metadata=metadata, notes=notes)


def _ordering_of(cfg: dict[str, Any]) -> str | None:
    if cfg.get("dim_ordering") in ("th", "tf"):
        return str(cfg["dim_ordering"])
    return {"channels_first": "th", "channels_last": "tf"}.get(str(cfg.get("data_format")))


def _guess_ordering(shape: tuple[int, ...], bias: tuple[int, ...] | None) -> str | None:
    """Keras 1 conv2d kernel: (out, in, r, c) under 'th', (r, c, in, out) under 'tf'."""
    if len(shape) != 4 or not bias:
        return None
    n = bias[0]
    if shape[0] == n and shape[3] != n:
        return "th"
    if shape[3] == n and shape[0] != n:
        return "tf"
    return None


def _describe_layer(lname: str, cls: str, cfg: dict[str, Any],
                    datasets: list[tuple[str, DatasetHeader]],
                    configs: dict[str, tuple[str, dict[str, Any]]], major: int, theano: bool,
                    f: h5py.File, path: Path, entries: list[TensorEntry]) -> LayerInfo:
    container = cls in CONTAINER_CLASSES
    kind = kind_for_config(cls, cfg) if cls and not container else Kind.OTHER
    if not cls:
        kind = kind_for_layer_name(lname)
    inner_cfg = cfg.get("layer", {}).get("config", cfg) if cls in WRAPPER_CLASSES else cfg
    described: list[tuple[str, DatasetHeader, str, Kind, Role, str | None, dict[str, Any]]] = []
    for wname, ds in datasets:
        owner, w_kind, w_cfg = lname, kind, inner_cfg
        if container:  # a nested Sequential/Model: each weight names its own sub-layer
            sub = owner_of_variable(wname)
            sub = sub[len(lname) + 1:] if sub.startswith(lname + "/") else sub
            s_cls, s_cfg = configs.get(f"{lname}/{sub}") or configs.get(sub, ("", {}))
            owner, w_cfg = f"{lname}/{sub}", s_cfg
            w_kind = kind_for_config(s_cls, s_cfg) if s_cls else kind_for_layer_name(sub)
        elif w_kind is Kind.OTHER:
            w_kind = kind_for_layer_name(owner_of_variable(wname))
        role, part = role_for_variable(wname, w_kind)
        leaf = wname.split(":", 1)[0].rsplit("/", 1)[-1]
        owner_seg = owner_of_variable(wname).rsplit("/", 1)[-1]
        for direction in ("forward", "backward"):
            if owner_seg.startswith(direction + "_") or leaf.startswith(direction + "_"):
                part = direction if part is None else f"{direction}/{part}"
        described.append((wname, ds, owner, w_kind, role, part, w_cfg))
    if kind is Kind.OTHER and not container and described:
        kind = kind_from_tensors([(r, d.shape) for _, d, _, _, r, _, _ in described])
        described = [(w, d, o, kind, role_for_variable(w, kind)[0] if k is Kind.OTHER else r, p, c)
                     for w, d, o, k, r, p, c in described]

    layer_cfg = dict(cfg)
    trainable = cfg.get("trainable") if isinstance(cfg.get("trainable"), bool) else None
    bias = next((d.shape for _, d, _, _, r, _, _ in described if r is Role.BIAS), None)
    keys: list[str] = []
    for wname, ds, owner, w_kind, role, part, w_cfg in described:
        convention = Convention.KERAS
        if w_kind in CONV_KINDS and role in (Role.KERNEL, Role.DEPTHWISE_KERNEL):
            ordering, source = _ordering_of(w_cfg), "model config"
            if ordering is None and major == 1 and w_kind is Kind.CONV2D:
                ordering = _guess_ordering(ds.shape, bias)
                source = f"inferred from kernel shape {ds.shape} and bias {bias}"
            layout = _STORED_LAYOUT.get((w_kind, major, "" if major == 2 else ordering or "?"))
            if w_kind is Kind.CONV1D and major == 1:  # 1.2: (len, 1, in, out); 1.1: (out, in, len, 1)
                layout = "oiw1" if ds.shape[-1] == 1 and bias and ds.shape[0] == bias[0] else "w1io"
            if w_kind in (Kind.DEPTHWISE_CONV2D, Kind.SEPARABLE_CONV2D):
                layout = "hwim"  # (rows, cols, in, depth_multiplier)
            convention = Convention.THEANO if theano else (
                Convention.TORCH if layout and layout.startswith("o") else Convention.KERAS)
            layer_cfg.update({"kernel_layout": layout, "flipped": theano})
            # dim_ordering here means what the layout rules read it as: how a Keras 1 kernel
            # is stored. Keras 2 stores every kernel (*spatial, in, out); its layers keep
            # their own data_format, and kernel_layout says the rest.
            if ordering and major == 1:
                layer_cfg["dim_ordering"] = ordering
                if source != "model config":
                    layer_cfg["dim_ordering_source"] = source
        key = f"{lname}/{wname}"
        entries.append(TensorEntry(
            key=key, shape=ds.shape, dtype=ds.dtype,
            loader=dataset_loader(f, ds, path), layer=owner, kind=w_kind, role=role,
            convention=convention, part=part, group=Group.MODEL,
            trainable=False if role in (Role.MOVING_MEAN, Role.MOVING_VARIANCE) else trainable))
        keys.append(key)
    if major == 1 and "dim_ordering" not in layer_cfg and (o := _ordering_of(cfg)):
        layer_cfg["dim_ordering"] = o
    return LayerInfo(name=lname, class_name=cls, kind=kind, config=layer_cfg, keys=tuple(keys),
                     trainable=trainable)


def _add_optimizer(f: h5py.File, index: H5Index, path: Path,
                   entries: list[TensorEntry]) -> None:
    if "optimizer_weights" not in index.groups:
        return
    for wname in read_str_list(index, "optimizer_weights", "weight_names"):
        ds = index.dataset("optimizer_weights", wname,
                           what="optimizer weight (listed in weight_names)")
        entries.append(TensorEntry(
            key=f"optimizer_weights/{wname}", shape=ds.shape, dtype=ds.dtype,
            loader=dataset_loader(f, ds, path), layer="optimizer",
            role=Role.OPTIMIZER_STATE, group=Group.OPTIMIZER))


def _notes(theano: bool, flipped: bool, ordering: str | None, major: int,
           layers: list[LayerInfo]) -> list[str]:
    notes: list[str] = []
    if theano:
        notes.append(
            "Theano-era file: saved with the Theano backend, which computes true convolution. "
            + ("Its convolution kernels are spatially flipped relative to TensorFlow, PyTorch "
               "and Keras 3 (cross-correlation): flip them when loading them elsewhere, or the "
               "model runs and gives plausible but wrong outputs. "
               if flipped else "It has no convolution kernels, so nothing needs flipping. ")
            + ("Keras 2 did not flip Keras 1 files on load (they record no backend)."
               if major == 1 and flipped else ""))
    if ordering == "th":
        notes.append(
            "dim_ordering 'th' (channels-first): activations are (channels, rows, cols), "
            "Keras 1 conv kernels are stored (out, in, rows, cols), and a Dense layer after "
            "Flatten expects its input rows in (C, H, W) order; a channels-last model needs "
            "those rows reordered to (H, W, C).")
    kinds = {li.kind for li in layers}
    if major == 1 and kinds & {Kind.LSTM, Kind.GRU}:
        notes.append(
            "Keras 1 recurrent layers store one array per gate (W_i, U_i, b_i, ...; entry part "
            "= gate letter, LSTM gate order i, c, f, o) and default to hard_sigmoid = "
            "clip(0.2x + 0.5, 0, 1), which differs from Keras 3 and PyTorch.")
    if major == 1 and Kind.BATCH_NORM in kinds:
        notes.append("Keras 1 BatchNormalization's 'running_std' holds the running variance "
                     "(role moving_variance), not a standard deviation.")
    return notes


def _plain_hdf5(f: h5py.File, index: H5Index, path: Path) -> Checkpoint:
    """An HDF5 file without Keras structure: list every dataset, describe nothing."""
    entries = [TensorEntry(key=ds.path, shape=ds.shape, dtype=ds.dtype,
                           loader=dataset_loader(f, ds, path), group=Group.OTHER)
               for ds in sorted(index.datasets.values(), key=lambda d: d.path) if ds.dtype]
    return Checkpoint(entries, format="hdf5", path=str(path), convention=Convention.UNKNOWN,
                      convention_reason="plain HDF5 file: no Keras layer_names attribute",
                      notes=["Holds no model weights: a plain HDF5 file (no Keras "
                             "layer_names attribute) whose datasets are listed as stored "
                             "(key, shape, dtype); none is described as a layer."])
