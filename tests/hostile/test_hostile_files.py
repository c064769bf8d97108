"""Hostile and broken files for the safetensors, sharded-index, NumPy and ONNX readers.

Each file must be refused with exactly one ``weightgraft`` error that names the file (and the
tensor when there is one), before any tensor byte is read or any large buffer allocated.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from weightgraft import FormatError, UnsafeFileError, WeightgraftError, open_checkpoint
from weightgraft.formats import numpy_format, safetensors_format


def _safetensors(path: Path, header: dict, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _refused(path: Path, exc_type: type[WeightgraftError] = FormatError,
             tensor: str | None = None) -> WeightgraftError:
    with pytest.raises(WeightgraftError) as info:
        ck = open_checkpoint(path)
        for e in ck:  # a reader that defers checks must still refuse on load
            e.load()
    err = info.value
    assert isinstance(err, exc_type), repr(err)
    assert err.path is not None and Path(err.path).name == path.name, str(err)
    if tensor is not None:
        assert err.tensor == tensor, str(err)
    assert err.__cause__ is None or isinstance(err.__cause__, WeightgraftError)
    return err


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def test_safetensors_header_overrunning_the_file(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "over.safetensors", {"w": F32_2}, length=10_000)
    assert "larger than the file" in str(_refused(path))


def test_safetensors_header_length_beyond_any_file(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "huge.safetensors", {"w": F32_2}, length=2**63)
    _refused(path)


@pytest.mark.parametrize("offsets", [[-8, 0], [0, 8 * 2**40], ["0", "8"], [8, 0]],
                         ids=["negative", "beyond-file", "strings", "reversed"])
def test_safetensors_bad_offsets_name_the_tensor(tmp_path: Path, offsets: list) -> None:
    path = _safetensors(tmp_path / "off.safetensors",
                        {"w": {"dtype": "F32", "shape": [2], "data_offsets": offsets}},
                        data=bytes(8))
    _refused(path, tensor="w")


def test_safetensors_overlapping_tensors(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    err = _refused(_safetensors(tmp_path / "lap.safetensors", header, bytes(16)), tensor="b")
    assert "overlap" in str(err) and "'a'" in str(err)


def test_safetensors_shape_that_does_not_match_its_bytes(tmp_path: Path) -> None:
    # A shape claiming 10^12 elements over 8 bytes must fail before allocating anything.
    header = {"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}
    err = _refused(_safetensors(tmp_path / "shape.safetensors", header, bytes(8)), tensor="w")
    assert "needs" in str(err)


def test_safetensors_truncated_data(tmp_path: Path, rng) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "cut.safetensors"
    save_file({"a": rng.standard_normal(64).astype("float32"),
               "b": rng.standard_normal(64).astype("float32")}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    _refused(path, tensor="b")


def test_safetensors_header_not_json(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b"{not json!!}")
    assert "JSON" in str(_refused(path))


def test_safetensors_duplicate_key_in_header(tmp_path: Path) -> None:
    raw = b'{"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "w": {}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert "twice" in str(_refused(path))


def test_safetensors_file_truncated_after_opening(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "later.safetensors", {"w": F32_2}, bytes(8))
    ck = safetensors_format.read(path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FormatError) as info:
        ck["w"].load()
    assert info.value.tensor == "w" and "later.safetensors" in str(info.value)


# -- NumPy -------------------------------------------------------------------------------
def test_truncated_npz(tmp_path: Path, rng) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, a=rng.standard_normal(500), b=rng.standard_normal(500))
    path.write_bytes(path.read_bytes()[:3000])
    _refused(path)


def test_npz_member_truncated_inside_a_valid_archive(tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1000))
    with zipfile.ZipFile(path, "w") as zf, zf.open("w.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(bytes(80))  # 10 of the 1000 float64 values
    _refused(path, tensor="w")


def test_npy_with_object_dtype(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    err = _refused(path, tensor="obj")
    assert "pickle" in str(err)


def test_npz_with_object_member_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    path = tmp_path / "obj.npz"
    np.savez(path, good=np.zeros(2), bad=np.array([Boom()], dtype=object))
    err = _refused(path, tensor="bad")
    assert "pickle" in str(err) and not marker.exists()


def test_npz_member_declaring_more_than_it_can_hold(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez(path, w=np.zeros(16))
    raw = bytearray(path.read_bytes())
    # Rewrite the central directory's uncompressed size (stored members: must equal the
    # compressed size) to 4 GiB.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = struct.pack("<I", 2**32 - 2)
    path.write_bytes(bytes(raw))
    _refused(path, tensor="w.npy")


def test_npz_read_direct_refuses_non_npz_output_name(tmp_path: Path) -> None:
    from weightgraft import Checkpoint

    with pytest.raises(FormatError):
        numpy_format.write(Checkpoint([], format="memory"), tmp_path / "x.npy")
    assert list(tmp_path.iterdir()) == []


# -- anything ----------------------------------------------------------------------------
def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.touch()
    assert "empty" in str(_refused(path))


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    assert "directory" in str(_refused(folder))


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in str(_refused(tmp_path / "nowhere.npz"))


def _fifo(tmp_path: Path) -> Path:
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / "p.pt"
    os.mkfifo(path)
    return path


def test_a_fifo_was_called_empty_and_must_not_hang(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _fifo(tmp_path)
    # In a child with a deadline: opening a FIFO for reading blocks until a writer comes.
    run = subprocess.run([sys.executable, "-m", "weightgraft.cli", "inspect", str(path)],
                         capture_output=True, text=True, timeout=120)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 2, out
    assert "not a regular file" in out and "named pipe" in out and "is empty" not in out
    script = ("import sys; from weightgraft import open_checkpoint, FormatError\n"
              "try: open_checkpoint(sys.argv[1], format='pytorch')\n"
              "except FormatError as e: print(e)")
    named = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                           text=True, timeout=120)
    assert "not a regular file" in named.stdout, named.stdout + named.stderr


def test_dev_zero_was_called_empty(tmp_path: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this platform")
    message = str(_refused(Path("/dev/zero")))
    assert "not a regular file" in message and "character device" in message
    assert "is empty" not in message


# -- sharded index -----------------------------------------------------------------------
def test_index_shard_escaping_its_folder(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    _refused(index, UnsafeFileError)


def test_index_without_weight_map(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": ["not", "a", "map"]}))
    _refused(index)


# -- ONNX --------------------------------------------------------------------------------
def _onnx_with_external(tmp_path: Path, location: str) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_onnx_external_data_outside_the_model_folder(tmp_path: Path, location: str) -> None:
    err = _refused(_onnx_with_external(tmp_path, location), UnsafeFileError, tensor="w")
    assert location in str(err)


def test_onnx_external_data_through_a_link_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(bytes(8))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.data").symlink_to(outside / "secret.bin")
    _refused(_onnx_with_external(model_dir, "w.data"), UnsafeFileError, tensor="w")


def test_onnx_external_data_too_short(tmp_path: Path) -> None:
    path = _onnx_with_external(tmp_path, "w.data")
    (tmp_path / "w.data").write_bytes(bytes(4))
    _refused(path, tensor="w")


def test_onnx_truncated(tmp_path: Path) -> None:
    path = _onnx_with_external(tmp_path, "w.data")
    path.write_bytes(path.read_bytes()[:40])
    _refused(path)


def test_onnx_inline_data_shorter_than_its_shape(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1000], bytes(4000), raw=True)
    w.raw_data = bytes(8)  # 2 of the 1000 values the dims promise
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])], initializer=[w])
    path = tmp_path / "short.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    _refused(path, tensor="w")
