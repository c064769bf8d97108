"""Hostile and broken PyTorch checkpoints, generated here (nothing is committed).

Each must be refused with one ``weightgraft`` error naming the file, without running any of
its code, hanging, or allocating what it claims.
"""

from __future__ import annotations

import os
import pickle
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightgraft import FormatError, TensorEntry, UnsafeFileError, WeightgraftError
from weightgraft.formats import open_checkpoint, torch_pickle
from weightgraft.formats.torch_zip_writer import state_dict_pickle

MAGIC = torch_pickle.LEGACY_MAGIC


class Touch:
    """A payload: unpickling it runs ``os.system('touch <target>')``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


class OpenForWriting:
    """A payload: unpickling it calls ``open(target, 'w')``, creating the file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.target), "w"))


def zip_checkpoint(path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None,
                   top: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/data.pkl", pickle_bytes)
        for key, data in (storages or {}).items():
            zf.writestr(f"{top}/data/{key}", data)
        zf.writestr(f"{top}/version", "3\n")
    return path


def legacy_checkpoint(path: Path, obj_pickle: bytes, keys: list[str] | None = None,
                      tail: bytes = b"") -> Path:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (
        MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    path.write_bytes(head + obj_pickle + pickle.dumps(keys or [], protocol=2) + tail)
    return path


def refused(path: Path, exc_type: type[WeightgraftError] = FormatError) -> WeightgraftError:
    with pytest.raises(WeightgraftError) as info:
        with open_checkpoint(path) as ck:
            for entry in ck:
                entry.load()
    err = info.value
    assert isinstance(err, exc_type), repr(err)
    assert err.path is not None and Path(err.path).name == path.name, str(err)
    assert err.__cause__ is None or isinstance(err.__cause__, WeightgraftError)
    return err


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL, and STACK_GLOBAL with framing
@pytest.mark.parametrize("payload", [Touch, OpenForWriting])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_code_in_the_pickle_is_refused_by_name_and_never_runs(
        tmp_path: Path, payload: type, layout: str, protocol: int) -> None:
    target = tmp_path / "pwned"
    evil = pickle.dumps({"weight": payload(target)}, protocol=protocol)
    # the payload is real: a plain unpickler would create the file
    pickle.loads(evil)
    assert target.exists()
    target.unlink()
    path = (zip_checkpoint(tmp_path / "evil.pt", evil) if layout == "zip"
            else legacy_checkpoint(tmp_path / "evil.pt", evil))
    err = refused(path, UnsafeFileError)
    assert not target.exists()
    func = os.system if payload is Touch else open
    name = f"{func.__module__}.{func.__name__}"  # how pickle names it: posix.system, io.open
    assert f"refused global '{name}'" in str(err)
    assert "no automatic unsafe fallback is performed" in str(err)


def test_a_whole_pickled_module_is_refused_with_a_fix(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 3), path)
    err = refused(path, UnsafeFileError)
    assert "refused global 'torch.nn.modules.linear.Linear'" in str(err)
    assert "state_dict" in (err.fix or "")


def _valid_zip(tmp_path: Path) -> Path:
    entries = [TensorEntry.from_array("w", np.arange(64, dtype="float32").reshape(8, 8)),
               TensorEntry.from_array("b", np.arange(8, dtype="float32"))]
    from weightgraft import Checkpoint

    path = tmp_path / "valid.pt"
    torch_pickle.write(Checkpoint(entries, format="memory"), path)
    return path


def test_truncated_zip_checkpoint(tmp_path: Path) -> None:
    data = _valid_zip(tmp_path).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    refused(path)


def test_every_truncation_gives_one_clean_error(tmp_path: Path) -> None:
    data = _valid_zip(tmp_path).read_bytes()
    path = tmp_path / "cut.pt"
    for length in range(1, len(data), max(1, len(data) // 40)):
        path.write_bytes(data[:length])
        refused(path, WeightgraftError)


def test_zip_entries_declaring_sizes_beyond_the_archive(tmp_path: Path) -> None:
    data = bytearray(_valid_zip(tmp_path).read_bytes())
    central = data.find(b"PK\x01\x02")
    while central >= 0:  # every central directory record claims 2 GB
        data[central + 20:central + 28] = struct.pack("<II", 0x7FFFFFFF, 0x7FFFFFFF)
        central = data.find(b"PK\x01\x02", central + 4)
    path = tmp_path / "sizes.pt"
    path.write_bytes(bytes(data))
    err = refused(path)
    assert "beyond the end" in str(err)


def test_storage_claiming_a_trillion_elements_is_not_allocated(tmp_path: Path) -> None:
    claim = TensorEntry("w", (10**6, 10**6), "float32", lambda: np.zeros(0))
    path = zip_checkpoint(tmp_path / "huge.pt", state_dict_pickle([claim]), {"0": b"\0" * 16})
    tracemalloc.start()
    try:
        err = refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.tensor == "w" and "1000000000000" in str(err) and "16 bytes" in str(err)
    assert peak < 5_000_000


def test_pickle_length_and_memo_bombs_allocate_nothing(tmp_path: Path) -> None:
    # BINBYTES8 claiming 2**60 bytes; LONG_BINPUT 4294967295 (grows a C unpickler's memo
    # to 32 GB); both in a few bytes.
    bytes_bomb = zip_checkpoint(tmp_path / "bytes.pt", b"\x80\x02\x8e" + struct.pack("<Q", 2**60))
    memo_bomb = zip_checkpoint(tmp_path / "memo.pt", b"\x80\x02}r\xff\xff\xff\xff.")
    tracemalloc.start()
    try:
        assert "truncated" in str(refused(bytes_bomb))
        with open_checkpoint(memo_bomb) as ck:
            assert len(ck) == 0 and ck.extras == {}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_deeply_nested_and_exponentially_shared_trees(tmp_path: Path) -> None:
    depth = 100_000
    deep = zip_checkpoint(tmp_path / "deep.pt", b"\x80\x02" + b"]" * depth + b"a" * (depth - 1)
                          + b".")
    # each level is a list holding the previous one twice: 2**60 paths through 60 objects
    shared = bytearray(b"\x80\x02]q\x000")
    for i in range(60):
        shared += b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1]) + b"0"
    shared_path = zip_checkpoint(tmp_path / "shared.pt", bytes(shared) + b"h<.")
    start = time.perf_counter()
    assert "deeper than" in str(refused(deep))
    assert "more than" in str(refused(shared_path))
    assert time.perf_counter() - start < 20


def test_legacy_file_truncated_in_its_storages(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(100.0), "b": torch.ones(3)}, whole,
               _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    path = tmp_path / "legacy_cut.pt"
    path.write_bytes(data[:-40])
    err = refused(path)
    assert "storage" in str(err) and "truncated" in str(err)


def test_legacy_storage_count_beyond_the_file(tmp_path: Path) -> None:
    claim = TensorEntry("w", (4,), "float32", lambda: np.zeros(0))
    tail = struct.pack("<q", 10**12) + b"\0" * 16
    path = legacy_checkpoint(tmp_path / "count.pt", state_dict_pickle([claim]), ["0"], tail)
    assert "1000000000000 elements" in str(refused(path))


def test_garbage_pickle_and_missing_storage_member(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    garbage = zip_checkpoint(tmp_path / "garbage.pt", b"\x80\x02" + rng.bytes(200))
    refused(garbage, WeightgraftError)  # random opcodes may also name a global
    entry = TensorEntry("w", (2,), "float32", lambda: np.zeros(0))
    missing = zip_checkpoint(tmp_path / "missing.pt", state_dict_pickle([entry]))
    assert "data/0" in str(refused(missing))
