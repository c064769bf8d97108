"""Sharded checkpoints: a JSON index (``weight_map``) over several shard files, read as one.

Hugging Face writes ``model.safetensors.index.json`` and ``pytorch_model.bin.index.json``::

    {"metadata": {"total_size": 123}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", ...}}

Each shard is opened with ``open_checkpoint`` (so lazily, with its own reader's checks);
the index only decides which tensor comes from which shard. Shard names must stay inside
the index's folder (``UnsafeFileError`` otherwise). Each entry's shard is in
``checkpoint.metadata["weight_map"]``.

Tensors of one layer may sit in different shards (a BatchNorm's ``weight`` in one, its
``running_var`` in the next), so naming rules run again over the whole table.

Example:
    >>> ck = read(Path("model.safetensors.index.json"))         # doctest: +SKIP
    >>> ck.metadata["weight_map"]["lm_head.weight"]             # doctest: +SKIP
    'model-00002-of-00002.safetensors'
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ..checkpoint import Checkpoint, Group, Kind, Role
from ..errors import FormatError, UnsafeFileError, WeightgraftError
from ..naming import describe_entries

NAME = "sharded-index"
ALIASES = ("index",)
EXTENSIONS = (".index.json",)

MAX_INDEX = 256 * 1024 * 1024  # an index lists names only; anything bigger is not one


def sniff(path: Path, head: bytes) -> bool:
    """A JSON object that names a ``weight_map`` (or a file named ``*.index.json``)."""
    text = head.lstrip()
    if not text.startswith(b"{") or path.name.lower().endswith(".weights.json"):
        return False  # Keras 3 ``*.weights.json`` also has a weight_map: its reader owns it
    if b'.h5"' in head and b'.safetensors"' not in head and b'.bin"' not in head:
        return False  # a Keras 3 index of ``.h5`` shards under another name
    return b'"weight_map"' in head or path.name.lower().endswith(".index.json")


def _load_index(path: Path) -> dict[str, str]:
    size = path.stat().st_size
    if size > MAX_INDEX:
        raise FormatError(path, f"the index is {size:,} bytes", expected="a JSON index under "
                          f"{MAX_INDEX // 2**20} MiB")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(path, f"the index is not valid JSON: {exc}",
                          expected="a JSON object with a weight_map") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise FormatError(path, "no weight_map of tensor name -> shard file name",
                          tensor="weight_map", expected='{"weight_map": {"name": "shard"}}')
    return weight_map


def _shard_path(path: Path, shard: str) -> Path:
    rel = PurePosixPath(shard.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UnsafeFileError(path, f"shard {shard!r} points outside the index's folder",
                              expected="a file name beside the index",
                              fix="edit the index so shards are named relative to its folder")
    return path.parent.joinpath(*rel.parts)


def read(path: Path) -> Checkpoint:
    """Open every shard named by the index lazily and join them into one table.

    Example:
        >>> with read(Path("pytorch_model.bin.index.json")) as ck:   # doctest: +SKIP
        ...     print(len(ck), ck.metadata["shards"])
    """
    from . import open_checkpoint  # the package imports this module; resolve at call time

    path = Path(path)
    weight_map = _load_index(path)
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    opened: list[Checkpoint] = []
    entries = []
    try:
        for shard, keys in by_shard.items():
            shard_path = _shard_path(path, shard)
            if not shard_path.is_file():
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5
                                               else "")
                raise FormatError(path, f"shard {shard!r} is missing; it should hold "
                                  f"{len(keys)} tensor(s): {shown}", tensor=keys[0],
                                  expected=f"{shard_path} beside the index",
                                  fix="download every shard the index lists")
            try:
                ck = open_checkpoint(shard_path)
            except WeightgraftError as exc:
                raise FormatError(path, f"shard {shard!r} cannot be read: {exc}",
                                  tensor=keys[0]) from None
            opened.append(ck)
            wanted = set(keys)
            found = [e for e in ck if e.key in wanted]
            missing = wanted - {e.key for e in found}
            if missing:
                name = sorted(missing)[0]
                raise FormatError(path, f"shard {shard!r} does not hold {len(missing)} "
                                  f"tensor(s) the index assigns to it, e.g. {name!r}",
                                  tensor=name, fix="the index and shards are from different "
                                  "saves; download them again together")
            entries.extend(found)
        # Naming ran per shard; a layer split across shards needs one pass over all of them.
        entries = [e.with_(kind=Kind.OTHER, role=Role.OTHER, layer="", part=None)
                   if e.group is Group.MODEL else e for e in entries]
        first = opened[0] if opened else None
        entries = describe_entries(entries, first.convention if first else None)
        meta: dict[str, Any] = {
            "weight_map": {e.key: weight_map[e.key] for e in entries},
            "shards": list(by_shard),
        }
        if first is not None and first.metadata:
            meta["shard_metadata"] = dict(first.metadata)
        ck = Checkpoint(
            entries, format=f"{first.format}-sharded" if first else NAME, path=str(path),
            framework=first.framework if first else None,
            framework_version=first.framework_version if first else None,
            convention=first.convention if first else "unknown",
            convention_reason=(first.convention_reason if first else ""),
            metadata=meta,
        )
    except BaseException:
        for c in opened:
            c.close()
        raise
    ck._closers.extend(c.close for c in opened)
    return ck
