"""Keras 3 ``.weights.h5`` (and sharded ``.weights.json``): read lazily, write back for Keras.

Keras 3 (``keras/src/saving/saving_lib.py``) stores no variable names. Each saveable object
gets a group at its attribute path (``layers/dense_1``, ``layers/functional/layers/conv2d``,
``layers/lstm/cell``, ``optimizer``) holding a ``vars`` group of datasets ``0``, ``1``, ...
in the layer's own variable order; the ``vars`` group carries the layer's
real name in its ``name`` attribute in recent releases (path segments are the class in snake case plus a
counter, not the layer name). Sharded weights (``save_weights("m.weights.json",
max_shard_size=...)``) put a JSON index ``{"metadata": {...}, "weight_map":
{"/layers/dense/vars": "m_00000.weights.h5" | [...]}}`` beside shard files in that layout.

This module also holds the hardened HDF5 access the legacy Keras reader shares: no external
links, no soft links, no external or virtual storage, no shape bombs, every h5py error
turned into a ``FormatError`` that names the file and the group.

Example:
    >>> import weightgraft as wg                                   # doctest: +SKIP
    >>> with wg.open_checkpoint("model.weights.h5") as ck:        # doctest: +SKIP
    ...     print(ck["layers/dense/vars/0"].layer, ck["layers/dense/vars/0"].role)
    dense kernel
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import atomic_output
from ..checkpoint import Checkpoint, Convention, Group, Kind, LayerInfo, Role, TensorEntry
from ..errors import FormatError, UnsafeFileError
from .hdf5_access import (
    DatasetHeader, H5Index, dataset_loader, exc_summary, is_hdf5, open_h5,
)
from .keras_names import (
    MHA_SUBLAYER_ROLES, WRAPPER_CLASSES, config_index, kind_for_config, kind_for_layer_name,
    role_for_position,
)

NAME = "keras3-h5"
EXTENSIONS = (".weights.h5", ".weights.json")
ALIASES = ("keras3", "weights.h5")

MAX_INDEX_BYTES = 64 << 20
_K3_KEY = re.compile(r"^(?:.+/)?vars/[^/]+$")


# -- the Keras 3 tree ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VarsGroup:
    """One saveable's ``<path>/vars`` group: where it is, its real name, its datasets."""

    path: str
    name: str | None
    datasets: tuple[DatasetHeader, ...]
    file: h5py.File


def _order(names: Iterator[str]) -> list[str]:
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def walk_vars(file: h5py.File, path: Path | str) -> list[VarsGroup]:
    """Every ``vars`` group in a Keras 3 weights file (links and storage checked first).

    Example:
        >>> [g.path for g in walk_vars(h5py.File("m.weights.h5"), "m.weights.h5")]  # doctest: +SKIP
        ['', 'layers/dense', 'optimizer']
    """
    index = H5Index(file, path)
    members: dict[str, list[str]] = {}
    for ds_path in index.datasets:
        owner, _, leaf = ds_path.rpartition("/")
        if owner == "vars" or owner.endswith("/vars"):
            members.setdefault(owner, []).append(leaf)
    found: list[VarsGroup] = []
    for group in sorted(g for g in index.groups if g == "vars" or g.endswith("/vars")):
        label = index.attr(group, "name")
        if isinstance(label, bytes):
            label = label.decode("utf-8", "replace")
        headers = tuple(index.dataset(group, leaf, what="variable")
                        for leaf in _order(iter(members.get(group, []))))
        found.append(VarsGroup(group[: -len("/vars")] if group != "vars" else "",
                               str(label) if label is not None else None, headers, file))
    return found


def looks_like_keras3(file: h5py.File) -> bool:
    """Keras 3 layout: no legacy ``layer_names``; ``vars``/``layers``/``optimizer`` groups.

    Example:
        >>> looks_like_keras3(h5py.File("m.weights.h5"))              # doctest: +SKIP
        True
    """
    attrs = file.attrs
    if "layer_names" in attrs or "layer_names0" in attrs or "model_weights" in file:
        return False
    tops = set(file.keys())
    if tops & {"vars", "layers", "optimizer", "_layer_checkpoint_dependencies"}:
        return True
    return any(isinstance(file.get(t, getlink=True), h5py.HardLink)
               and isinstance(file[t], h5py.Group) and "vars" in file[t] for t in tops)


def describe_tree(groups: list[VarsGroup], path: Path | str,
                  configs: dict[str, tuple[str, dict[str, Any]]] | None = None,
                  ) -> tuple[list[TensorEntry], list[LayerInfo], dict[str, str]]:
    """Entries and layers for Keras 3 ``vars`` groups (configs from a ``.keras`` file if any).

    Example:
        >>> entries, layers, names = describe_tree(walk_vars(f, p), p)   # doctest: +SKIP
        >>> entries[0].key, entries[0].layer, entries[0].role.value      # doctest: +SKIP
        ('layers/dense/vars/0', 'dense', 'kernel')
    """
    configs = configs or {}
    names = {g.path: g.name for g in groups if g.name}
    entries: list[TensorEntry] = []
    layers: dict[str, LayerInfo] = {}
    for g in groups:
        segs = g.path.split("/") if g.path else []
        is_opt = bool(segs) and segs[0] == "optimizer"
        other = "seed_generator" in segs or (segs and segs[-1].startswith("seed_generator"))
        owner_segs, part, mha = list(segs), None, None
        if owner_segs and owner_segs[-1] == "cell":
            owner_segs.pop()
        if owner_segs and owner_segs[-1] in ("forward_layer", "backward_layer"):
            part = owner_segs.pop().split("_", 1)[0]
        if owner_segs and owner_segs[-1] in MHA_SUBLAYER_ROLES:
            mha = owner_segs.pop()
        layer = _layer_name(owner_segs, names)
        cls, cfg = configs.get(layer) or configs.get(layer.rsplit("/", 1)[-1]) or ("", {})
        kind = kind_for_config(cls, cfg) if cls else Kind.OTHER
        if kind is Kind.OTHER and not cls:
            for guess in (owner_segs[-1] if owner_segs else "", g.name or "",
                          segs[-1] if segs else ""):
                kind = kind_for_layer_name(guess)
                if kind is not Kind.OTHER:
                    break
        if mha:
            kind = Kind.MULTI_HEAD_ATTENTION
        inner_cfg = cfg
        if cls in WRAPPER_CLASSES and isinstance(cfg.get("layer"), dict):
            inner_cfg = cfg["layer"].get("config", {})
        trainable = cfg.get("trainable") if isinstance(cfg.get("trainable"), bool) else None
        keys: list[str] = []
        for i, ds in enumerate(g.datasets):
            key = ds.path
            ds_name = key.rsplit("/", 1)[-1]
            if is_opt or other:
                role, e_kind = Role.OPTIMIZER_STATE if is_opt else Role.OTHER, Kind.OTHER
            elif mha:
                pair = MHA_SUBLAYER_ROLES[mha]
                role, e_kind = (pair[i] if i < 2 else Role.OTHER), kind
            else:
                pos = int(ds_name) if ds_name.isdigit() else -1
                role, e_kind = role_for_position(kind, pos, len(g.datasets), inner_cfg), kind
            e_trainable = False if role in (Role.MOVING_MEAN, Role.MOVING_VARIANCE) else trainable
            entries.append(TensorEntry(
                key=key, shape=ds.shape, dtype=ds.dtype,
                loader=dataset_loader(g.file, ds, path),
                layer=("optimizer" if is_opt else layer), kind=e_kind, role=role,
                convention=Convention.KERAS if not (is_opt or other) else Convention.UNKNOWN,
                trainable=None if (is_opt or other) else e_trainable,
                group=Group.OPTIMIZER if is_opt else (Group.OTHER if other else Group.MODEL),
                part=part))
            keys.append(key)
        if keys and not (is_opt or other):
            prev = layers.get(layer)
            layers[layer] = LayerInfo(
                name=layer, class_name=cls, kind=kind, config=dict(cfg),
                keys=(prev.keys if prev else ()) + tuple(keys), trainable=trainable)
    return entries, list(layers.values()), names


def _layer_name(segs: list[str], names: dict[str, str | None]) -> str:
    """Join the real names of every saveable on the path (the root model's own name left out)."""
    parts: list[str] = []
    for i in range(1, len(segs) + 1):
        prefix = "/".join(segs[:i])
        if prefix in names:
            parts.append(names[prefix] or segs[i - 1])
        elif i == len(segs) and segs[-1] not in ("layers", "_layer_checkpoint_dependencies"):
            parts.append(segs[-1])
    return "/".join(parts) if parts else "/".join(segs)


def _in_write_order(groups: list[VarsGroup]) -> list[VarsGroup]:
    """Groups in the order Keras wrote them (its save order is the model's layer order).

    h5py lists members alphabetically, which loses the order. Keras writes contiguous
    datasets, whose file offsets grow in write order, so the header alone recovers it.
    """
    keyed = []
    for i, g in enumerate(groups):
        known = [d.offset for d in g.datasets if d.offset is not None]
        if g.datasets and not known:
            return groups  # chunked or compact storage: no order to recover, keep the listing
        keyed.append((min(known) if known else -1, i, g))
    return [g for _, _, g in sorted(keyed, key=lambda t: (t[0], t[1]))]


def checkpoint_from_files(files: list[h5py.File], path: Path, *, fmt: str,
                          model_config: dict[str, Any] | None = None,
                          version: str | None = None) -> Checkpoint:
    """Build the Checkpoint for already-opened Keras 3 weight files (one, or shards).

    Example:
        >>> ck = checkpoint_from_files([h5py.File(p)], p, fmt=NAME)    # doctest: +SKIP
    """
    groups = [g for f in files for g in _in_write_order(walk_vars(f, path))]
    entries, layers, names = describe_tree(groups, path, config_index(model_config))
    data_formats = {li.config.get("data_format") for li in layers} - {None}
    opt = next((g.name for g in groups if g.path == "optimizer"), None)
    ck = Checkpoint(
        entries, format=fmt, path=str(path), framework="keras", framework_version=version,
        data_format=data_formats.pop() if len(data_formats) == 1 else None,
        convention=Convention.KERAS,
        convention_reason="Keras 3 file: every backend stores kernels the same way "
                          "(channels-last, conv (*spatial, in, out), dense (in, out))",
        model_config=model_config, layers=layers,
        metadata={"keras3_vars_names": {k: v for k, v in names.items() if v},
                  **({"optimizer": opt} if opt else {})})
    return ck


# -- the format interface -----------------------------------------------------------------------
def _is_sharded_index(path: Path, head: bytes) -> bool:
    text = head.lstrip()
    return path.name.lower().endswith(".json") and text.startswith(b"{") and \
        b'"weight_map"' in head and b".h5" in head


def sniff(path: Path, head: bytes) -> bool:
    """A Keras 3 weights HDF5 file, or a Keras sharded weights index (``*.weights.json``).

    Example:
        >>> sniff(Path("m.weights.json"), b'{"metadata": {}, "weight_map": {"/vars": "m_0.h5"}}')
        True
    """
    if _is_sharded_index(path, head):
        return True
    if not is_hdf5(head):
        return False
    try:
        with h5py.File(path, "r") as f:
            return looks_like_keras3(f)
    except Exception:
        return False  # the legacy reader claims broken HDF5 files and explains


def read(path: Path) -> Checkpoint:
    """Read a Keras 3 ``.weights.h5`` or a sharded ``.weights.json`` index lazily.

    Example:
        >>> ck = read(Path("model.weights.h5"))                    # doctest: +SKIP
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if _is_sharded_index(path, head):
        return _read_sharded(path)
    f = open_h5(path, path)
    try:
        ck = checkpoint_from_files([f], path, fmt=NAME)
    except BaseException:
        f.close()
        raise
    ck._closers.append(f.close)
    return ck


def _read_sharded(path: Path) -> Checkpoint:
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise FormatError(path, "sharded weights index is larger than 64 MiB",
                          expected="a small JSON index")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"sharded weights index is not valid JSON ({exc_summary(exc)})",
                          expected='{"metadata": ..., "weight_map": {...}}') from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError(path, "sharded weights index has no weight_map object",
                          expected='{"weight_map": {"/layers/dense/vars": "x_00000.weights.h5"}}')
    shards: list[str] = []
    for group, files in weight_map.items():
        for name in files if isinstance(files, list) else [files]:
            if not isinstance(name, str) or not name:
                raise FormatError(path, f"weight_map[{group!r}] names no shard file",
                                  expected="a shard file name")
            if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
                raise UnsafeFileError(path, f"Not allowed: shard {name!r} lies outside the "
                                            "index's folder", tensor=group,
                                      fix="keep shard files beside the index, named plainly")
            if name not in shards:
                shards.append(name)
    opened: list[h5py.File] = []
    try:
        for name in shards:
            shard = path.with_name(name)
            if not shard.is_file():
                raise FormatError(path, f"shard file {name!r} is missing", tensor=name,
                                  fix="copy every shard listed in the index beside it")
            opened.append(open_h5(shard, shard))
        ck = checkpoint_from_files(opened, path, fmt=NAME)
    except BaseException:
        for f in opened:
            f.close()
        raise
    ck.metadata["shards"] = shards
    ck._closers.extend(f.close for f in opened)
    return ck


def write(checkpoint: Checkpoint, path: Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Write model tensors to a Keras 3 ``.weights.h5`` that ``model.load_weights`` accepts.

    Needs Keras 3 variable paths as keys (``layers/dense/vars/0``), i.e. a checkpoint read
    from a Keras 3 file; ``name`` attributes are restored from the reader's record.

    Example:
        >>> write(read(Path("a.weights.h5")), Path("b.weights.h5"))   # doctest: +SKIP
    """
    if Path(path).name.lower().endswith(".json"):
        raise FormatError(path, "writing sharded Keras weights is not supported",
                          expected="an output name ending in .weights.h5",
                          fix="write one .weights.h5 file (Keras loads it the same way)")
    entries = checkpoint.model_entries()
    bad = [e.key for e in entries if not _K3_KEY.match(e.key)]
    if bad:
        raise FormatError(path, f"{len(bad)} tensor(s) have no Keras 3 variable path "
                                f"(first: {bad[0]!r})",
                          expected="keys like 'layers/dense/vars/0' from a Keras 3 file",
                          fix="transplant into a Keras 3 model and use model.save_weights, "
                              "or write .safetensors/.npz instead")
    names: dict[str, str] = dict(checkpoint.metadata.get("keras3_vars_names") or {})
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for e in entries:
            group_path, leaf = e.key.rsplit("/", 1)
            grp = f.require_group(group_path)
            array = e.load(raw=True)
            if e.dtype == "bfloat16":
                array = _as_keras_bfloat16(array, path, e.key)
                grp.create_dataset(leaf, data=array).attrs["dtype"] = "bfloat16"
            else:
                grp.create_dataset(leaf, data=array)
        for owner, name in names.items():
            vars_path = f"{owner}/vars" if owner else "vars"
            f.require_group(vars_path).attrs["name"] = name
        if metadata:
            f.attrs["weightgraft_metadata"] = json.dumps(metadata, sort_keys=True)


def _as_keras_bfloat16(bits: np.ndarray, path: Path, key: str) -> np.ndarray:
    try:
        import ml_dtypes  # Keras's own bfloat16 type; installed with Keras
    except ImportError as exc:
        raise FormatError(path, "writing bfloat16 for Keras needs ml_dtypes", tensor=key,
                          fix="pip install ml_dtypes (it comes with keras)") from exc
    return np.asarray(bits, dtype=np.uint16).view(ml_dtypes.bfloat16)
