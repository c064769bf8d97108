"""PyTorch checkpoints read and written without torch, compared with torch's own loader.

Every file here is written by real ``torch.save`` (zip and legacy serialization) and every
tensor read by weightgraft must equal ``torch.load(weights_only=True)`` bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightgraft import Checkpoint, FormatError, Group, Kind, Role, TensorEntry
from weightgraft.formats import open_checkpoint, torch_pickle, write_checkpoint

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SERIALIZATIONS = [pytest.param(True, id="zip"), pytest.param(False, id="legacy")]


def torch_flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """torch's loaded object tree flattened with the documented key scheme (the reference)."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(torch_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(torch_flat(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def as_numpy(t: Any) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy()  # compare bits, as entries load with raw=True
    return t.numpy()


def assert_same_as_torch(path: Path) -> Checkpoint:
    expected = torch_flat(torch.load(path, weights_only=True))
    ck = open_checkpoint(path)
    assert sorted(ck.keys()) == sorted(expected)
    for entry in ck:
        want = as_numpy(expected[entry.key])
        got = entry.load(raw=True)
        assert got.dtype == want.dtype, entry.key
        assert got.shape == want.shape == entry.shape, entry.key
        np.testing.assert_array_equal(got, want, err_msg=entry.key)
        assert got.flags.c_contiguous and got.flags.writeable
    return ck


def small_cnn() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))


@pytest.mark.parametrize("new_zip", SERIALIZATIONS)
def test_small_cnn_state_dict_equals_torch_load(tmp_path: Path, new_zip: bool) -> None:
    path = tmp_path / "cnn.pth"
    torch.save(small_cnn().state_dict(), path, _use_new_zipfile_serialization=new_zip)
    ck = assert_same_as_torch(path)
    assert ck.format == "pytorch" and ck.framework == "pytorch"
    assert ck.metadata["serialization"] == ("zip" if new_zip else "legacy")
    described = {e.key: (e.kind, e.role) for e in ck}
    assert described["0.weight"] == (Kind.CONV2D, Role.KERNEL)
    assert described["1.running_var"] == (Kind.BATCH_NORM, Role.MOVING_VARIANCE)
    assert described["4.weight"] == (Kind.DENSE, Role.KERNEL)
    assert ck["4.bias"].layer == "4"


@pytest.mark.parametrize("new_zip", SERIALIZATIONS)
def test_nested_checkpoint_with_adam_state(tmp_path: Path, new_zip: bool) -> None:
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path / "train.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "optimizer": opt.state_dict(),
                "best": {"acc": 0.75}}, path, _use_new_zipfile_serialization=new_zip)
    ck = assert_same_as_torch(path)
    assert ck["state_dict.0.weight"].group is Group.MODEL
    assert ck["state_dict.0.weight"].kind is Kind.CONV2D
    exp_avg = ck["optimizer.state.0.exp_avg"]
    assert exp_avg.group is Group.OPTIMIZER and exp_avg.role is Role.OPTIMIZER_STATE
    assert len(ck.model_entries()) == len(model.state_dict())
    assert ck.extras["epoch"] == 3 and ck.extras["best"] == {"acc": 0.75}
    groups = ck.extras["optimizer.param_groups"]
    assert groups[0]["lr"] == 0.01 and groups[0]["params"] == list(range(6))
    assert ck.metadata["containers"] == {"state_dict": "model", "optimizer": "optimizer"}


@pytest.mark.parametrize("new_zip", SERIALIZATIONS)
def test_every_storage_dtype(tmp_path: Path, new_zip: bool) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = {
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).half(), "f64": torch.randn(2, 2, generator=g).double(),
        "i64": torch.arange(-3, 9).reshape(3, 4), "i32": torch.arange(5, dtype=torch.int32),
        "i8": torch.tensor([-128, 5, 127], dtype=torch.int8), "u8": torch.arange(250, 256).byte(),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3), "c64": torch.randn(3, generator=g, dtype=torch.cfloat),
    }
    if new_zip:  # torch's legacy format cannot hold the new unsigned dtypes
        tensors["u16"] = torch.tensor([1, 2, 65535], dtype=torch.int32).to(torch.uint16)
    path = tmp_path / "dtypes.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=new_zip)
    ck = assert_same_as_torch(path)
    assert ck["bf16"].dtype == "bfloat16" and ck["f16"].dtype == "float16"
    widened = ck["bf16"].load()  # default load widens bfloat16 to float32 exactly
    np.testing.assert_array_equal(widened, tensors["bf16"].float().numpy())


@pytest.mark.parametrize("new_zip", SERIALIZATIONS)
def test_views_offsets_and_non_contiguous_tensors(tmp_path: Path, new_zip: bool) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {"transposed": base.t(), "window": base[2:5, 3:9], "strided": base[::2, ::3],
               "row": base[4], "expanded": torch.arange(3.0).expand(4, 3)}
    path = tmp_path / "views.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=new_zip)
    ck = assert_same_as_torch(path)
    shared = [sorted(group) for group in ck.metadata["tied"]]
    assert sorted(["row", "strided", "transposed", "window"]) in shared


@pytest.mark.parametrize("new_zip", SERIALIZATIONS)
def test_tied_weights_keep_both_keys(tmp_path: Path, new_zip: bool) -> None:
    class TiedLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(11, 4)
            self.head = torch.nn.Linear(4, 11, bias=False)
            self.head.weight = self.embed.weight

    path = tmp_path / "tied.pt"
    torch.save(TiedLM().state_dict(), path, _use_new_zipfile_serialization=new_zip)
    ck = assert_same_as_torch(path)
    assert {"embed.weight", "head.weight"} <= set(ck.keys())
    assert ["embed.weight", "head.weight"] in ck.metadata["tied"]


def test_archive_folder_name_is_taken_from_the_archive(tmp_path: Path) -> None:
    original = tmp_path / "orig.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, original)
    renamed = tmp_path / "renamed.bin"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            dst.writestr("my-model/" + info.filename.split("/", 1)[1], src.read(info))
    ck = assert_same_as_torch(renamed)
    assert ck.metadata["archive_root"] == "my-model"


def test_big_endian_archive_loads_as_native_values(tmp_path: Path) -> None:
    tensors = {"f32": torch.linspace(-2, 3, 7), "i64": torch.arange(-4, 5) * 2**40,
               "f16": torch.linspace(-1, 1, 5).half(), "bf16": torch.linspace(0, 4, 6).bfloat16()}
    little = tmp_path / "little.pt"
    torch.save(tensors, little)
    big = tmp_path / "big.pt"
    # torch names storages "0", "1", ... in the order tensors are pickled
    order = {str(i): as_numpy(t).dtype for i, t in enumerate(tensors.values())}
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            top, rest = info.filename.split("/", 1)
            if rest == "byteorder":
                data = b"big"
            elif rest.startswith("data/"):
                data = np.frombuffer(data, order[rest[5:]]).byteswap().tobytes()
            dst.writestr(info.filename, data)
    ck = assert_same_as_torch(big)  # torch swaps the bytes back; so must weightgraft
    assert ck.metadata["byteorder"] == "big"
    np.testing.assert_array_equal(ck["i64"].load(), tensors["i64"].numpy())


def test_reading_never_imports_torch(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"state_dict": small_cnn().state_dict(), "epoch": 1}, path)
    legacy = tmp_path / "legacy.pt"
    torch.save(small_cnn().state_dict(), legacy, _use_new_zipfile_serialization=False)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any attempt to import torch now fails loudly
        import weightgraft
        for p in ({str(path)!r}, {str(legacy)!r}):
            with weightgraft.open_checkpoint(p) as ck:
                total = sum(float(e.load().sum()) for e in ck)
        print(len(ck), "torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(small_cnn().state_dict())), "False"]


def test_entries_still_load_after_close(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    with open_checkpoint(path) as ck:
        entry = ck["w"]
    np.testing.assert_array_equal(entry.load(), np.arange(4.0, dtype="float32"))


@pytest.mark.parametrize("protocol", range(6))
def test_restricted_unpickler_reads_plain_values_like_pickle(protocol: int) -> None:
    import collections
    import pickle

    from weightgraft.formats.restricted_unpickler import RestrictedUnpickler

    shared = [1, 2]
    value = {"epoch": 3, "lr": 1e-3, "betas": (0.9, 0.999), "name": "résumé", "none": None,
             "flags": [True, False], "big": 2**70, "neg": -(2**40), "raw": b"\x00\xff",
             "tags": {"a", "b"}, "frozen": frozenset({1}), "od": collections.OrderedDict(x=1),
             "nested": {1: [shared, shared]}, "buf": bytearray(b"ab")}
    data = pickle.dumps(value, protocol=protocol)
    assert RestrictedUnpickler(data, "x.pt").load() == pickle.loads(data)


# -- the corpus: a real file saved by someone else -------------------------------------------
@pytest.mark.corpus
def test_crepe_tiny_equals_torch_load_and_the_keras_kernels(corpus: Path) -> None:
    h5py = pytest.importorskip("h5py")
    ck = assert_same_as_torch(corpus / "crepe-tiny" / "tiny.pth")
    assert len(ck) == 44 and ck.metadata["archive_root"] == "archive"
    # model-tiny.h5 is a Keras 2 save_weights file: /<layer>/<layer>_3/kernel:0
    with h5py.File(corpus / "crepe-tiny" / "model-tiny.h5", "r") as h5:
        for i in range(1, 7):
            kernel = h5[f"conv{i}/conv{i}_3/kernel:0"][()]
            weight = ck[f"conv{i}.weight"]
            assert weight.kind is Kind.CONV2D and weight.role is Role.KERNEL
            np.testing.assert_array_equal(weight.load(), kernel.transpose(3, 2, 0, 1))
            np.testing.assert_array_equal(ck[f"conv{i}.bias"].load(),
                                          h5[f"conv{i}/conv{i}_3/bias:0"][()])
        np.testing.assert_array_equal(ck["classifier.weight"].load(),
                                      h5["classifier/classifier_3/kernel:0"][()].T)


# -- the writer ------------------------------------------------------------------------------
def test_writer_round_trips_through_torch_load_and_load_state_dict(tmp_path: Path) -> None:
    model = small_cnn()
    model(torch.randn(4, 3, 8, 8))  # move BatchNorm statistics off their initial values
    src = tmp_path / "src.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 2}, src)
    ck = open_checkpoint(src)
    renamed = [e.with_(key=e.key.removeprefix("state_dict.")) for e in ck.model_entries()]
    out = tmp_path / "out.pt"
    write_checkpoint(Checkpoint(renamed, format="memory"), out, metadata={"from": "src.pt"})
    for mmap in (False, True):
        loaded = torch.load(out, weights_only=True, mmap=mmap)
        assert list(loaded) == list(model.state_dict())
        for key, value in model.state_dict().items():
            assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    fresh = small_cnn()
    torch.nn.init.zeros_(fresh[0].weight)
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))
    assert open_checkpoint(out).metadata["weightgraft"] == {"from": "src.pt"}


def test_writer_is_bit_exact_for_every_dtype_and_aligns_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    bf16_bits = rng.integers(0, 2**16, size=(3, 4), dtype=np.uint16)
    bf16_bits[0, 0] = 0x7FC1  # a NaN payload must survive too
    arrays = {"f32": rng.standard_normal((2, 3)).astype("float32"),
              "f16": rng.standard_normal(5).astype("float16"),
              "i64": rng.integers(-2**40, 2**40, size=4), "bool": rng.random(6) > 0.5,
              "u8": rng.integers(0, 256, size=3, dtype=np.uint8),
              "u16": rng.integers(0, 2**16, size=3, dtype=np.uint16),
              "scalar": np.array(1.5, dtype="float64"), "empty": np.zeros((0, 2), "float32")}
    entries = [TensorEntry.from_array(k, v) for k, v in arrays.items()]
    entries.append(TensorEntry("bf16", (3, 4), "bfloat16", lambda: bf16_bits))
    out = tmp_path / "all.pt"
    torch_pickle.write(Checkpoint(entries, format="memory"), out)
    loaded = torch.load(out, weights_only=True)
    for key, value in arrays.items():
        assert loaded[key].numpy().dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)
    assert loaded["bf16"].dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded["bf16"].view(torch.uint16).numpy(), bf16_bits)
    with zipfile.ZipFile(out) as zf:
        for info in zf.infolist():
            if "/data/" in info.filename:
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert start % 64 == 0, info.filename


def test_writer_refuses_a_dtype_torch_cannot_hold_and_leaves_nothing(tmp_path: Path) -> None:
    entries = [TensorEntry.from_array("ok", np.zeros(2, "float32")),
               TensorEntry.from_array("names", np.array(["a", "b"]))]
    out = tmp_path / "bad.pt"
    with pytest.raises(FormatError, match="names"):
        torch_pickle.write(Checkpoint(entries, format="memory"), out)
    assert list(tmp_path.iterdir()) == []
