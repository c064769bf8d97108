"""Provenance: where each weight came from, written with every transplant output.

A record names the source file (and its sha256), the source keys, the layout transforms, and
a content fingerprint of the exact tensor that was assigned. ``explain`` answers "where did
this weight come from?" from records when they exist, and from fingerprints alone when they
do not (matching each tensor's content, under the known layout transforms, against candidate
source files; flagging tensors that look like a fresh initialisation). The record format is
specified in docs/provenance.md.

Example:
    >>> import numpy as np
    >>> fingerprint(np.arange(6, dtype="float32").reshape(2, 3))[:7]
    'sha256:'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, Convention, TensorEntry
from .errors import FormatError

FORMAT = "weightgraft.provenance"
VERSION = 1
SAFETENSORS_KEY = "weightgraft.provenance"
SIDECAR_SUFFIX = ".provenance.json"
_FP_DOMAIN = b"weightgraft-fingerprint-v1\0"


def fingerprint(array: np.ndarray, dtype: str | None = None) -> str:
    """``sha256:<hex>`` over dtype, shape and the exact little-endian C-order bytes.

    Two tensors share a fingerprint only when they hold the same values in the same layout
    and dtype. ``dtype`` overrides the name hashed (``"bfloat16"`` for its uint16 bits).

    Example:
        >>> a = np.ones((2, 2), "float32")
        >>> fingerprint(a) == fingerprint(a.copy()), fingerprint(a) == fingerprint(a.T.copy())
        (True, True)
        >>> fingerprint(a) == fingerprint(a.astype("float64"))
        False
    """
    arr = np.asarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.require(arr, requirements="C")
    h = hashlib.sha256(_FP_DOMAIN)
    h.update((dtype or arr.dtype.name).encode() + b"\0")
    h.update(",".join(str(d) for d in arr.shape).encode() + b"\0")
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return "sha256:" + h.hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """The file's sha256 (hex), read in 4 MiB chunks so memory stays flat.

    Example:
        >>> import tempfile; p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
        >>> file_sha256(p)[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tool_version() -> str:
    from . import __version__

    return __version__


@dataclass(frozen=True)
class TensorRecord:
    """The provenance of one assigned tensor (see docs/provenance.md)."""

    key: str
    status: str  # "copied" | "converted" | "initial"
    fingerprint: str
    dtype: str
    shape: tuple[int, ...]
    source: str | None = None  # id into ProvenanceRecord.sources
    source_keys: tuple[str, ...] = ()
    transforms: tuple[str, ...] = ()
    tier: str | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "fingerprint": self.fingerprint,
                                "dtype": self.dtype, "shape": list(self.shape)}
        if self.source is not None:
            data.update(source=self.source, source_keys=list(self.source_keys),
                        transforms=list(self.transforms), tier=self.tier,
                        confidence=self.confidence)
        return data

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> TensorRecord:
        return cls(key=key, status=str(data["status"]), fingerprint=str(data["fingerprint"]),
                   dtype=str(data["dtype"]), shape=tuple(int(d) for d in data["shape"]),
                   source=data.get("source"), source_keys=tuple(data.get("source_keys", ())),
                   transforms=tuple(data.get("transforms", ())), tier=data.get("tier"),
                   confidence=data.get("confidence"))


@dataclass(frozen=True)
class ProvenanceRecord:
    """All tensor records of one output, plus its sources, tool and verification.

    Example:
        >>> r = ProvenanceRecord(tensors=(TensorRecord("w", "copied", "sha256:0", "float32", (2,)),))
        >>> ProvenanceRecord.from_json(r.to_json()) == r
        True
    """

    tensors: tuple[TensorRecord, ...] = ()
    sources: tuple[Mapping[str, Any], ...] = ()
    target: Mapping[str, Any] = field(default_factory=dict)
    verification: Mapping[str, Any] | None = None
    tool: str = field(default_factory=tool_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc)
                         .strftime("%Y-%m-%dT%H:%M:%SZ"))

    def by_key(self) -> dict[str, TensorRecord]:
        return {t.key: t for t in self.tensors}

    def source_of(self, record: TensorRecord) -> Mapping[str, Any] | None:
        return next((s for s in self.sources if s.get("id") == record.source), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION,
                "tool": {"name": "weightgraft", "version": self.tool},
                "created": self.created, "sources": [dict(s) for s in self.sources],
                "target": dict(self.target), "verification": self.verification,
                "tensors": {t.key: t.to_dict() for t in self.tensors}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | None = None) -> ProvenanceRecord:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise FormatError(path or "<provenance>", "not a weightgraft provenance record",
                              expected=f"a JSON object with format {FORMAT!r}")
        if int(data.get("version", 0)) > VERSION:
            raise FormatError(path or "<provenance>",
                              f"provenance version {data.get('version')} is newer than supported",
                              expected=f"version <= {VERSION}", fix="upgrade weightgraft")
        try:
            tensors = tuple(TensorRecord.from_dict(k, v) for k, v in data["tensors"].items())
            return cls(tensors=tensors, sources=tuple(data.get("sources", ())),
                       target=dict(data.get("target", {})), verification=data.get("verification"),
                       tool=str(data.get("tool", {}).get("version", "")),
                       created=str(data.get("created", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(path or "<provenance>", f"malformed provenance record: {exc}",
                              expected="the structure in docs/provenance.md") from None

    @classmethod
    def from_json(cls, text: str, *, path: str | None = None) -> ProvenanceRecord:
        try:
            return cls.from_dict(json.loads(text), path=path)
        except json.JSONDecodeError as exc:
            raise FormatError(path or "<provenance>", f"provenance is not valid JSON: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the record as JSON, atomically."""
        from .atomic import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """``<output>.provenance.json``."""
    return Path(os.fspath(output) + SIDECAR_SUFFIX)


def read_record(path: str | os.PathLike[str]) -> ProvenanceRecord | None:
    """The provenance travelling with a file: safetensors metadata or the sidecar; or None.

    Example:
        >>> read_record("/nonexistent.pt") is None
        True
    """
    p = Path(path)
    side = sidecar_path(p)
    if side.is_file():
        return ProvenanceRecord.from_json(side.read_text(encoding="utf-8"), path=str(side))
    if p.suffix == ".safetensors" and p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(p), "np") as fh:
                meta = fh.metadata() or {}
        except Exception as exc:  # the safetensors binding raises its own exception types
            raise FormatError(p, f"cannot read safetensors header: {exc}") from None
        if SAFETENSORS_KEY in meta:
            return ProvenanceRecord.from_json(meta[SAFETENSORS_KEY], path=str(p))
    return None


# -- explain -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorOrigin:
    """What is known about one tensor's origin.

    ``status``: ``recorded`` (a provenance record vouches for these exact bytes),
    ``modified`` (a record exists but the content changed since), ``matched`` (found by
    content in a candidate file), ``initial`` (looks like a fresh initialisation or equals the
    given initial snapshot), ``unknown``.
    """

    key: str
    status: str
    source_path: str | None = None
    source_sha256: str | None = None
    source_keys: tuple[str, ...] = ()
    transforms: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Explanation:
    """The answer of ``explain``: one ``TensorOrigin`` per tensor, plus where we looked."""

    subject: str
    origins: tuple[TensorOrigin, ...]
    record_found: bool
    candidates: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.origins:
            out[o.status] = out.get(o.status, 0) + 1
        return out


def explain(path_or_model: Any, *, candidates: Iterable[str | os.PathLike[str]] | None = None,
            init: Any = None, record: ProvenanceRecord | None = None) -> Explanation:
    """Where did each weight of a file or live model come from?

    Uses the provenance record travelling with the file (or ``record``) when present; for
    tensors it does not vouch for, searches ``candidates`` (checkpoint paths) by content
    under the layout transforms a transplant would apply; ``init`` (a path, a ``Checkpoint``
    or a ``{key: array}`` snapshot taken before training) flags tensors that never changed.

    Example:
        >>> ex = explain("out.pt", candidates=["vgg16_keras.h5"])   # doctest: +SKIP
        >>> ex.origins[0].status, ex.origins[0].source_keys         # doctest: +SKIP
        ('recorded', ('block1_conv1/kernel:0',))
    """
    from .formats import open_checkpoint

    owned = False
    if isinstance(path_or_model, str | os.PathLike):
        subject = os.fspath(path_or_model)
        ckpt = open_checkpoint(subject)
        owned = True
        if record is None:
            record = read_record(subject)
    elif isinstance(path_or_model, Checkpoint):
        ckpt, subject = path_or_model, path_or_model.path or "<checkpoint>"
    else:
        from .modelview import view

        mv = view(path_or_model)
        ckpt, subject = mv.as_checkpoint(), f"<{mv.framework} model>"
    try:
        return _explain(ckpt, subject, record, [os.fspath(c) for c in candidates or ()],
                        _init_arrays(init))
    finally:
        if owned:
            ckpt.close()


def _init_arrays(init: Any) -> Mapping[str, Any] | None:
    if init is None or isinstance(init, Mapping):
        return init
    if isinstance(init, Checkpoint):
        return {e.key: e for e in init.model_entries()}
    if isinstance(init, str | os.PathLike):
        from .formats import open_checkpoint

        ck = open_checkpoint(init)
        return {e.key: e for e in ck.model_entries()}
    from .modelview import view

    mv = view(init)
    return {k: mv.read(k) for k in mv.slots}


def _explain(ckpt: Checkpoint, subject: str, record: ProvenanceRecord | None,
             candidates: list[str], init: Mapping[str, Any] | None) -> Explanation:
    by_key = record.by_key() if record else {}
    by_fp = {t.fingerprint: t for t in record.tensors} if record else {}
    entries = ckpt.model_entries()
    dtypes = {e.dtype for e in entries}
    index: dict[str, tuple[str, str, tuple[str, ...]]] | None = None
    origins = []
    for entry in entries:
        array = entry.load(raw=entry.dtype == "bfloat16")
        fp = fingerprint(array, entry.dtype)
        rec = by_key.get(entry.key) or by_fp.get(fp)
        if rec is not None and rec.fingerprint == fp and rec.source is not None:
            src = record.source_of(rec) if record else None
            origins.append(TensorOrigin(entry.key, "recorded",
                                        (src or {}).get("path"), (src or {}).get("sha256"),
                                        rec.source_keys, rec.transforms,
                                        f"tier {rec.tier}, confidence {rec.confidence}"))
            continue
        if rec is not None and rec.status == "initial" and rec.fingerprint == fp:
            origins.append(TensorOrigin(entry.key, "initial",
                                        detail="left at its initial value by the transplant "
                                               "that wrote this file, and unchanged since"))
            continue
        modified = rec is not None and rec.fingerprint != fp
        init_note = _initial_pattern(entry.key, array, init)
        if init_note:
            # Checked before the content search: a constant tensor "matching" a candidate's
            # constant tensor proves nothing about where it came from.
            origins.append(TensorOrigin(entry.key, "initial", detail=init_note))
            continue
        if candidates and index is None:
            index = _candidate_index(candidates, dtypes)
        hit = (index or {}).get(fp)
        if hit is not None:
            path, key, steps = hit
            origins.append(TensorOrigin(entry.key, "matched", path, None, (key,), steps,
                                        "content equals the source tensor" +
                                        (" after the listed transforms" if steps else "") +
                                        ("; a record exists but names other content"
                                         if modified else "")))
            continue
        if modified:
            origins.append(TensorOrigin(entry.key, "modified",
                                        detail="a provenance record exists, but the content "
                                               "changed since (fine-tuned or edited)"))
        else:
            origins.append(TensorOrigin(entry.key, "unknown",
                                        detail="no record and no candidate holds this content"))
    return Explanation(subject, tuple(origins), record is not None, tuple(candidates))


def _initial_pattern(key: str, array: np.ndarray, init: Mapping[str, Any] | None) -> str:
    if init is not None and key in init:
        ref = init[key]
        ref = ref.load() if isinstance(ref, TensorEntry) else np.asarray(ref)
        if ref.shape == array.shape and np.array_equal(ref, array):
            return "equals its value in the initial snapshot: never trained"
    if array.size and np.issubdtype(array.dtype, np.number):
        first = array.flat[0]
        if np.all(array == first):
            what = {0: "all zeros", 1: "all ones"}.get(float(first), f"constant {first}")
            return f"{what}: the pattern of a fresh initialisation"
    return ""


def _candidate_index(paths: list[str], dtypes: set[str]) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Fingerprint -> (file, key, transforms) for every candidate tensor under the layout
    transforms a transplant applies, plus plain axis permutations for tensors without a
    described kind."""
    from .formats import open_checkpoint

    index: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for path in paths:
        with open_checkpoint(path) as ck:
            for entry in ck.model_entries():
                array = entry.load()
                for steps, variant in _variants(entry, array):
                    for dt in dtypes | {variant.dtype.name}:
                        if dt == "bfloat16" or not np.can_cast(variant.dtype, dt, "same_kind"):
                            continue
                        index.setdefault(fingerprint(variant.astype(dt, copy=False)),
                                         (path, entry.key, steps))
    return index


def _variants(entry: TensorEntry, array: np.ndarray) -> Iterable[tuple[tuple[str, ...], np.ndarray]]:
    yield (), array
    from . import layouts
    from .errors import WeightgraftError

    if entry.convention is not Convention.UNKNOWN:
        for dst in (Convention.KERAS, Convention.TORCH):
            if dst is entry.convention:
                continue
            try:
                tr = layouts.tensor_transform(entry.kind, entry.role, entry.convention, dst)
                yield tr.steps, tr.apply(array)
            except (WeightgraftError, ValueError):
                continue
    if 2 <= array.ndim <= 4:
        for perm in itertools.permutations(range(array.ndim)):
            if perm == tuple(range(array.ndim)):
                continue
            yield ((f"transpose axes {perm}",),
                   np.require(array.transpose(perm), requirements="C"))
