"""``convert``: bit-exact format changes, checked with each format's own loader."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

from weightgraft import Checkpoint, TensorEntry, WeightgraftError
from weightgraft.convert import convert
from weightgraft.formats import formats, write_checkpoint


def _need_writer(module: str) -> None:
    spec = importlib.util.find_spec(f"weightgraft.formats.{module}")
    if spec is None:
        pytest.skip(f"weightgraft.formats.{module} is not there yet")
    mod = importlib.import_module(f"weightgraft.formats.{module}")
    if not hasattr(mod, "write"):
        pytest.skip(f"weightgraft.formats.{module} has no writer yet")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A small CNN's state dict with awkward dtypes: float16, int64 scalar, float64."""
    return {
        "features.0.weight": rng.standard_normal((8, 3, 3, 3)).astype("float32"),
        "features.0.bias": rng.standard_normal(8).astype("float32"),
        "features.1.weight": rng.standard_normal(8).astype("float16"),
        "features.1.bias": rng.standard_normal(8).astype("float16"),
        "features.1.running_mean": rng.standard_normal(8).astype("float32"),
        "features.1.running_var": rng.random(8).astype("float32"),
        "features.1.num_batches_tracked": np.array(7, dtype="int64"),
        "classifier.weight": rng.standard_normal((10, 72)).astype("float64"),
        "classifier.bias": rng.standard_normal(10).astype("float64"),
    }


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and (
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


@pytest.mark.torch
def test_safetensors_to_torch_zip_reads_back_with_torch_load(tmp_path, rng) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    _need_writer("torch_pickle")
    arrays = _arrays(rng)
    src = tmp_path / "model.safetensors"
    save_file(arrays, str(src))
    digest = _sha256(src)
    result = convert(src, tmp_path / "model.pt", check=True)
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(loaded) == set(arrays)
    for key, array in arrays.items():
        assert _bits_equal(loaded[key].numpy(), array), key
    assert result.tensors == len(arrays) and result.checked
    assert _sha256(src) == digest  # the input is never modified


@pytest.mark.torch
def test_torch_zip_to_safetensors_reads_back_with_safetensors(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    if importlib.util.find_spec("weightgraft.formats.torch_pickle") is None:
        pytest.skip("weightgraft.formats.torch_pickle (the PyTorch reader) is not there yet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5))
    model(torch.randn(2, 3, 6, 6))  # running statistics become non-trivial
    state = model.state_dict()
    src = tmp_path / "model.pth"
    torch.save(state, src)
    digest = _sha256(src)
    convert(src, tmp_path / "model.safetensors")
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert _bits_equal(loaded[key], tensor.numpy()), key
    assert _sha256(src) == digest


@pytest.mark.torch
def test_bfloat16_survives_both_directions_bit_for_bit(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    _need_writer("torch_pickle")
    tensor = torch.randn(4, 5, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    save_file({"w": tensor}, str(tmp_path / "a.safetensors"))
    convert(tmp_path / "a.safetensors", tmp_path / "b.pt")
    as_pt = torch.load(tmp_path / "b.pt", weights_only=True)["w"]
    assert as_pt.dtype == torch.bfloat16
    assert torch.equal(as_pt.view(torch.int16), tensor.view(torch.int16))
    convert(tmp_path / "b.pt", tmp_path / "c.safetensors")
    back = load_file(str(tmp_path / "c.safetensors"))["w"]
    assert torch.equal(back.view(torch.int16), tensor.view(torch.int16))


def test_safetensors_to_npz_and_back_is_bit_exact(tmp_path, rng) -> None:
    from safetensors.numpy import load_file, save_file

    _need_writer("numpy_format")
    arrays = _arrays(rng)
    save_file(arrays, str(tmp_path / "a.safetensors"))
    convert(tmp_path / "a.safetensors", tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as npz:
        assert set(npz.files) == set(arrays)
        for key, array in arrays.items():
            assert _bits_equal(npz[key], array), key
    convert(tmp_path / "b.npz", tmp_path / "c.safetensors", check=True)
    back = load_file(str(tmp_path / "c.safetensors"))
    assert all(_bits_equal(back[k], a) for k, a in arrays.items())


def test_a_failing_write_leaves_no_output_and_no_temporary(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    save_file(_arrays(rng), str(tmp_path / "a.safetensors"))
    digest = _sha256(tmp_path / "a.safetensors")
    calls = []

    def fail_midway(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 4:  # the writer has started writing tensor bytes
            raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        convert(tmp_path / "a.safetensors", tmp_path / "b.safetensors", progress=fail_midway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    assert _sha256(tmp_path / "a.safetensors") == digest


def test_an_existing_output_survives_a_failed_conversion(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    save_file(_arrays(rng), str(tmp_path / "a.safetensors"))
    (tmp_path / "b.safetensors").write_bytes(b"previous result")

    def fail(done: int, total: int) -> None:
        if done:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        convert(tmp_path / "a.safetensors", tmp_path / "b.safetensors", progress=fail)
    assert (tmp_path / "b.safetensors").read_bytes() == b"previous result"


def test_converting_a_file_onto_itself_is_refused(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    save_file(_arrays(rng), str(tmp_path / "a.safetensors"))
    digest = _sha256(tmp_path / "a.safetensors")
    with pytest.raises(WeightgraftError, match="output is the input"):
        convert(tmp_path / "a.safetensors", tmp_path / "." / "a.safetensors")
    assert _sha256(tmp_path / "a.safetensors") == digest


def test_unknown_output_ending_names_the_writable_formats(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    save_file(_arrays(rng), str(tmp_path / "a.safetensors"))
    with pytest.raises(WeightgraftError, match="--format") as info:
        convert(tmp_path / "a.safetensors", tmp_path / "b.weird")
    assert "safetensors" in str(info.value)
    assert not (tmp_path / "b.weird").exists()


def test_progress_reports_every_byte_once(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    arrays = _arrays(rng)
    save_file(arrays, str(tmp_path / "a.safetensors"))
    seen: list[tuple[int, int]] = []
    result = convert(tmp_path / "a.safetensors", tmp_path / "b.safetensors",
                     progress=lambda d, t: seen.append((d, t)))
    total = sum(a.nbytes for a in arrays.values())
    assert result.nbytes == total and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_writers_hold_one_tensor_at_a_time(tmp_path, suffix) -> None:
    """Streaming: memory is bounded by the largest tensor, not the checkpoint."""
    writable = {ext for m in formats() if hasattr(m, "write") for ext in m.EXTENSIONS}
    if suffix not in writable:
        pytest.skip(f"no writer for {suffix} yet")
    live = [0]
    peak = [0]

    def released() -> None:
        live[0] -= 1

    def loader(i: int):  # noqa: ANN202
        def load() -> np.ndarray:
            array = np.full((64, 64), i, dtype="float32")
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            weakref.finalize(array, released)
            return array

        return load

    entries = [TensorEntry(f"layer{i}.weight", (64, 64), "float32", loader(i))
               for i in range(30)]
    write_checkpoint(Checkpoint(entries, format="memory"), tmp_path / f"out{suffix}")
    assert peak[0] <= 2, f"the {suffix} writer held {peak[0]} tensors at once"
    assert os.path.getsize(tmp_path / f"out{suffix}") > 30 * 64 * 64 * 4


@pytest.mark.torch
def test_optimizer_state_and_extras_are_left_out_and_listed(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    if importlib.util.find_spec("weightgraft.formats.torch_pickle") is None:
        pytest.skip("weightgraft.formats.torch_pickle is not there yet")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 7},
               tmp_path / "train.pt")
    result = convert(tmp_path / "train.pt", tmp_path / "w.safetensors")
    saved = load_file(str(tmp_path / "w.safetensors"))
    assert len(saved) == 2 and result.tensors == 2
    assert sorted(a.size for a in saved.values()) == [2, 6]
    assert result.left_out and all("optim" in k for k in result.left_out)
    assert any("epoch" in k for k in result.extras_left_out)


@pytest.mark.keras
def test_keras3_weights_round_trip_through_safetensors_loads_in_keras(tmp_path, rng) -> None:
    from weightgraft.frameworks import import_keras

    keras = import_keras()
    _need_writer("keras3_h5")

    def build():  # noqa: ANN202
        return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c"),
                                 keras.layers.BatchNormalization(name="bn"),
                                 keras.layers.Flatten(), keras.layers.Dense(4, name="d")])

    source = build()
    for w in source.weights:
        values = rng.standard_normal(tuple(w.shape)).astype("float32")
        w.assign(np.abs(values) + 0.5 if "variance" in w.path else values)
    source.save_weights(tmp_path / "a.weights.h5")
    convert(tmp_path / "a.weights.h5", tmp_path / "b.safetensors", check=True)
    convert(tmp_path / "b.safetensors", tmp_path / "c.weights.h5", check=True)
    target = build()
    target.load_weights(tmp_path / "c.weights.h5")  # Keras's own loader is the judge
    for a, b in zip(source.weights, target.weights):
        assert _bits_equal(np.asarray(a.numpy()), np.asarray(b.numpy())), a.path
    x = rng.standard_normal((2, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(source.predict(x, verbose=0), target.predict(x, verbose=0))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_outputs_were_private_0600_instead_of_following_the_umask(tmp_path, rng, umask_027,
                                                                  suffix) -> None:
    import stat

    from safetensors.numpy import save_file

    src = tmp_path / "model.safetensors"
    save_file(_arrays(rng), str(src))
    out = tmp_path / f"out{suffix}"
    convert(src, out)
    # what open(..., "w") gives any other file the user writes, under the same umask
    (tmp_path / "plain").write_bytes(b"")
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask_027 == 0o640
    assert stat.S_IMODE(out.stat().st_mode) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_every_atomic_output_follows_the_umask_and_a_replaced_file_keeps_its_mode(
        tmp_path, umask_027) -> None:
    import stat

    from weightgraft.atomic import atomic_output

    with atomic_output(tmp_path / "plan.json") as tmp:  # plans and provenance go this way
        tmp.write_text("{}")
    assert stat.S_IMODE((tmp_path / "plan.json").stat().st_mode) == 0o640
    private = tmp_path / "private.json"
    private.write_text("old")
    private.chmod(0o600)
    with atomic_output(private, suffix=".weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert private.read_text() == "new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # as `cat > private.json` keeps it


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """``__metadata__`` as the safetensors library itself reads it (the reference)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})


def test_safetensors_metadata_was_lost_in_conversion(tmp_path, rng) -> None:
    from safetensors.numpy import save_file

    src = tmp_path / "model.safetensors"
    save_file(_arrays(rng), str(src), metadata={"format": "pt", "note": "hi"})
    result = convert(src, tmp_path / "copy.safetensors")
    meta = _safetensors_metadata(tmp_path / "copy.safetensors")
    assert meta["format"] == "pt" and meta["note"] == "hi"
    assert result.metadata == meta
    # through a torch zip and back: it keeps metadata where torch.load does not look
    convert(src, tmp_path / "via.pt")
    convert(tmp_path / "via.pt", tmp_path / "back.safetensors")
    meta = _safetensors_metadata(tmp_path / "back.safetensors")
    assert meta["note"] == "hi" and meta["format"] == "pt"
    # an .npz could hold it only as one more array np.load would show: said, not written
    result = convert(src, tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz", allow_pickle=False) as npz:
        assert set(npz.files) == set(_arrays(np.random.default_rng(0)))
    assert {"format", "note"} <= set(result.metadata_left_out) and result.metadata == {}


@pytest.mark.torch
def test_torch_to_safetensors_wrote_no_format_so_reinspecting_had_to_guess(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from weightgraft import inspect

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "model.pth")
    convert(tmp_path / "model.pth", tmp_path / "model.safetensors")
    # the key transformers reads to know a PyTorch-layout file
    assert _safetensors_metadata(tmp_path / "model.safetensors")["format"] == "pt"
    header = inspect(tmp_path / "model.safetensors").header
    assert header.convention == "torch" and "inferred" not in header.convention_reason


def test_a_theano_files_convention_survives_conversion(corpus, tmp_path) -> None:
    from weightgraft import inspect

    src = corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5"
    convert(src, tmp_path / "th.safetensors")
    header = inspect(tmp_path / "th.safetensors").header
    # the flipped kernels are named like any Keras kernel: only the record can say so
    assert header.convention == "theano" and header.theano_era
    assert _safetensors_metadata(tmp_path / "th.safetensors") == {
        "weightgraft.convention": "theano"}
