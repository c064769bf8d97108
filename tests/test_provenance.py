"""Provenance records: fingerprints, the record format, and explain with and without records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import weightgraft as wg
from weightgraft.provenance import (
    ProvenanceRecord,
    TensorRecord,
    file_sha256,
    fingerprint,
    read_record,
    sidecar_path,
)


def test_fingerprint_sees_values_layout_and_dtype(rng: np.random.Generator) -> None:
    a = rng.normal(size=(3, 4)).astype(np.float32)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.T.copy())          # same values, other layout
    assert fingerprint(a) != fingerprint(a.reshape(4, 3))     # same bytes, other shape
    assert fingerprint(a) != fingerprint(a.astype(np.float64))
    assert fingerprint(a) == fingerprint(a.astype(">f4"))     # byte order is normalised
    b = a.copy()
    b[2, 3] = np.nextafter(b[2, 3], np.float32(np.inf))
    assert fingerprint(a) != fingerprint(b)                    # one ulp changes it


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 << 20)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path, chunk=1 << 20) == hashlib.sha256(data).hexdigest()


def test_record_round_trip_and_version_checks(tmp_path: Path) -> None:
    rec = ProvenanceRecord(
        tensors=(TensorRecord("fc.weight", "converted", "sha256:ab", "float32", (2, 3), "s0",
                              ("dense/kernel:0",), ("transpose axes (1, 0)",), "structure", 0.9),
                 TensorRecord("fc.bias", "initial", "sha256:cd", "float32", (2,))),
        sources=({"id": "s0", "path": "a.h5", "sha256": "00", "format": "keras-h5"},),
        target={"framework": "torch", "output": "x.pt"}, verification={"passed": True})
    assert ProvenanceRecord.from_json(rec.to_json()) == rec
    rec.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["format"] == "weightgraft.provenance" and data["version"] == 1
    data["version"] = 99
    with pytest.raises(wg.FormatError, match="newer"):
        ProvenanceRecord.from_dict(data)
    with pytest.raises(wg.FormatError, match="not a weightgraft provenance record"):
        ProvenanceRecord.from_dict({"format": "x"})
    del data["tensors"]
    data["version"] = 1
    with pytest.raises(wg.FormatError, match="malformed"):
        ProvenanceRecord.from_dict(data)


torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")


def _pair() -> tuple[keras.Model, torch.nn.Module]:
    keras.utils.set_random_seed(3)
    k = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="hidden"),
                          keras.layers.Dense(4, name="out")])
    rng = np.random.default_rng(5)  # biases too: Keras initialises them to zeros
    k.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in k.get_weights()])
    t = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    return k, t


def _keras_file(model: keras.Model, path: Path) -> Path:
    model.save_weights(path)
    return path


def test_transplant_writes_records_that_explain_reads(tmp_path: Path) -> None:
    k, t = _pair()
    src = _keras_file(k, tmp_path / "src.weights.h5")
    report = wg.transplant(src, t, output=tmp_path / "out.pt")
    record = read_record(tmp_path / "out.pt")
    assert record is not None and record == ProvenanceRecord.from_json(
        sidecar_path(tmp_path / "out.pt").read_text())
    assert record.sources[0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    w = record.by_key()["0.weight"]
    assert w.fingerprint == fingerprint(t[0].weight.detach().numpy())
    assert w.status == "converted" and w.transforms and w.source_keys
    assert report.slot("0.weight").fingerprint == w.fingerprint

    ex = wg.explain(tmp_path / "out.pt")
    assert ex.record_found
    origins = {o.key: o for o in ex.origins}
    assert origins["0.weight"].status == "recorded"
    assert origins["0.weight"].source_path == str(src)
    assert origins["0.weight"].source_keys == w.source_keys


def test_explain_notices_content_changed_after_the_record(tmp_path: Path) -> None:
    k, t = _pair()
    wg.transplant(k, t, output=tmp_path / "out.pt")
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    state["2.bias"] = state["2.bias"] + torch.linspace(0.1, 0.4, 4)
    torch.save(state, tmp_path / "out.pt")
    origins = {o.key: o for o in wg.explain(tmp_path / "out.pt").origins}
    assert origins["2.bias"].status == "modified"
    assert origins["0.weight"].status == "recorded"


def test_pretrained_retrained_and_still_random_told_apart(tmp_path: Path) -> None:
    """The question the tool exists for: after a transfer with a new head, explain says the
    backbone is pretrained (recorded), the head is still as initialised, and once the head
    is trained, that it changed since (modified)."""
    k, _ = _pair()
    t = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    wg.transplant(k, t, allow_missing="2.*", allow_unused="out*", output=tmp_path / "ft.pt")
    record = read_record(tmp_path / "ft.pt")
    assert record is not None
    head = record.by_key()["2.weight"]
    assert head.status == "initial" and head.source is None
    assert head.fingerprint == fingerprint(t[2].weight.detach().numpy())
    origins = {o.key: o.status for o in wg.explain(tmp_path / "ft.pt").origins}
    assert origins == {"0.weight": "recorded", "0.bias": "recorded",
                       "2.weight": "initial", "2.bias": "initial"}
    state = torch.load(tmp_path / "ft.pt", weights_only=True)
    state["2.weight"] = state["2.weight"] * 0.5 + 0.01  # "training" the head
    torch.save(state, tmp_path / "ft.pt")
    origins = {o.key: o.status for o in wg.explain(tmp_path / "ft.pt").origins}
    assert origins["2.weight"] == "modified" and origins["2.bias"] == "initial"
    assert origins["0.weight"] == "recorded"


def test_a_keras_file_source_records_its_path_and_sha256(tmp_path: Path) -> None:
    """Found by audit: a .keras source (built into a live model first) recorded path null."""
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    k, _ = _pair()
    src = tmp_path / "src.keras"
    k.save(src)
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(5, 4))\n")
    out = tmp_path / "out.safetensors"
    res = CliRunner().invoke(cli, ["transplant", str(src), "--into",
                                   f"{tmp_path / 'net.py'}:build", "-o", str(out)])
    assert res.exit_code == 0, res.output
    record = read_record(out)
    assert record is not None
    assert record.sources[0]["path"] == str(src)
    assert record.sources[0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_explain_from_fingerprints_alone(tmp_path: Path) -> None:
    """No record: content is found in the candidate file under the Keras->PyTorch transpose;
    a zeroed tensor is flagged as a fresh initialisation pattern."""
    k, t = _pair()
    src = _keras_file(k, tmp_path / "src.weights.h5")
    wg.transplant(src, t)
    with torch.no_grad():
        t[2].bias.zero_()
    state = {key: v.detach().clone() for key, v in t.state_dict().items()}
    torch.save(state, tmp_path / "plain.pt")  # no sidecar
    ex = wg.explain(tmp_path / "plain.pt", candidates=[src])
    assert not ex.record_found
    origins = {o.key: o for o in ex.origins}
    w = origins["0.weight"]
    assert w.status == "matched" and w.source_path == str(src)
    assert any("transpose" in s for s in w.transforms)
    assert origins["0.bias"].status == "matched"
    assert origins["2.bias"].status == "initial" and "zeros" in origins["2.bias"].detail


def test_explain_flags_tensors_equal_to_the_init_snapshot(tmp_path: Path) -> None:
    t = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    torch.save({k: v.clone() for k, v in t.state_dict().items()}, tmp_path / "init.pt")
    with torch.no_grad():
        t[0].weight.add_(0.5)
    torch.save(t.state_dict(), tmp_path / "trained.pt")
    origins = {o.key: o for o in wg.explain(tmp_path / "trained.pt",
                                            init=tmp_path / "init.pt").origins}
    assert origins["1.weight"].status == "initial" and "never trained" in origins["1.weight"].detail
    assert origins["0.weight"].status == "unknown"


def test_safetensors_output_carries_its_record(tmp_path: Path) -> None:
    k, t = _pair()
    wg.transplant(k, t, output=tmp_path / "out.safetensors")
    assert not sidecar_path(tmp_path / "out.safetensors").exists()
    record = read_record(tmp_path / "out.safetensors")
    assert record is not None and set(record.by_key()) == set(t.state_dict())
    statuses = {o.status for o in wg.explain(tmp_path / "out.safetensors").origins}
    assert statuses == {"recorded"}
