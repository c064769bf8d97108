"""``make demo`` runs ``python -m weightgraft.demo``: it must pass its own proof."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

pytestmark = [pytest.mark.torch, pytest.mark.keras]
pytest.importorskip("torch")
pytest.importorskip("keras")


def test_demo_transplants_verifies_and_records_provenance(tmp_path) -> None:
    from weightgraft.demo import main

    out = Console(record=True, width=120)
    assert main(["--out", str(tmp_path)], console=out) == 0
    text = out.export_text()
    assert "PASS" in text and "agrees on 16/16" in text
    record = json.loads((tmp_path / "demo_cnn_keras.weights.h5.provenance.json").read_text())
    kernel = record["tensors"]["classifier/kernel"]
    assert kernel["source_keys"] == ["classifier.weight"]
    assert any("chw -> hwc" in step for step in kernel["transforms"])

    # Independent check of the written file: h5py and torch.load, not weightgraft.
    import h5py
    import torch

    state = torch.load(tmp_path / "demo_cnn.pt", weights_only=True)
    with h5py.File(tmp_path / "demo_cnn_keras.weights.h5", "r") as f:
        conv1 = np.asarray(f["layers/conv2d/vars/0"])
    np.testing.assert_array_equal(conv1, state["features.0.weight"].numpy().transpose(2, 3, 1, 0))


def test_format_tour_inspects_every_written_file(tmp_path) -> None:
    from weightgraft.demo import main

    out = Console(record=True, width=120)
    assert main(["--out", str(tmp_path), "--formats"], console=out) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"demo_cnn.safetensors", "demo_cnn.npz", "demo_cnn.pt", "demo_cnn.weights.h5"} <= names
    assert out.export_text().count("Total params") == 4
