"""The neutral table, the error family and the package's import weight."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from weightgraft import Checkpoint, FormatError, Kind, Role, TensorEntry
from weightgraft.atomic import atomic_output
from weightgraft.checkpoint import bfloat16_bits_to_float32


def test_import_pulls_in_neither_torch_nor_keras() -> None:
    code = "import sys, weightgraft; print('torch' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_entry_loads_lazily_and_counts() -> None:
    calls = []

    def loader() -> np.ndarray:
        calls.append(1)
        return np.arange(6, dtype="float32").reshape(2, 3)

    e = TensorEntry("d/kernel", (2, 3), "float32", loader, kind="dense", role="kernel")
    assert calls == [] and e.kind is Kind.DENSE and e.role is Role.KERNEL
    assert e.num_params == 6 and e.nbytes == 24
    assert e.load()[1, 2] == 5 and calls == [1]


def test_bfloat16_widening_is_exact() -> None:
    values = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    widened = bfloat16_bits_to_float32(bits)
    # bfloat16 keeps the top 16 bits: widening must equal truncating the float32 bits
    expected = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(widened, expected)


def test_duplicate_keys_are_refused() -> None:
    e = TensorEntry.from_array("a", np.zeros(1))
    with pytest.raises(FormatError, match="appears twice"):
        Checkpoint([e, e], format="memory", path="x.bin")


def test_atomic_output_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
