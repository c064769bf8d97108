"""Hostile Keras files, generated on the spot: each is refused with one weightgraft error.

Every error must name the file and the problem; nothing may follow a link out of the file,
read past its end, or allocate what a header merely claims.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from weightgraft.errors import FormatError, UnsafeFileError, WeightgraftError
from weightgraft.formats import keras3_h5, keras3_zip, keras_legacy_h5


def _legacy(path: Path, *, layer_names: list[str] | None = None,
            weight_names: list[str] | None = None) -> h5py.File:
    """A minimal Keras 2 ``save_weights`` file, left open for the test to corrupt."""
    f = h5py.File(path, "w")
    f.attrs["layer_names"] = np.array([n.encode() for n in (layer_names or ["dense_1"])])
    f.attrs["keras_version"], f.attrs["backend"] = b"2.1.3", b"tensorflow"
    g = f.create_group("dense_1")
    names = weight_names or ["dense_1/kernel:0", "dense_1/bias:0"]
    g.attrs["weight_names"] = np.array([n.encode() for n in names])
    g["dense_1/kernel:0"] = np.arange(6, dtype="float32").reshape(2, 3)
    g["dense_1/bias:0"] = np.zeros(3, "float32")
    return f


def _keras3(path: Path) -> h5py.File:
    f = h5py.File(path, "w")
    f.create_group("vars").attrs["name"] = "sequential"
    v = f.create_group("layers/dense/vars")
    v.attrs["name"] = "dense"
    v["0"] = np.ones((2, 3), "float32")
    v["1"] = np.zeros(3, "float32")
    return f


def _refused(reader, path: Path, error: type[WeightgraftError], *words: str) -> WeightgraftError:
    with pytest.raises(error) as info:
        ck = reader.read(path)
        for e in ck:  # a lazy reader may only notice on load
            e.load()
    text = str(info.value)
    assert str(path) in text, text
    for word in words:
        assert word in text, text
    return info.value


def test_legacy_external_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.h5").write_bytes(b"")
    path = tmp_path / "ext.h5"
    with _legacy(path) as f:
        del f["dense_1"]
        f["dense_1"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/data")
    _refused(keras_legacy_h5, path, UnsafeFileError, "Not allowed", "ExternalLink", "dense_1")


def test_keras3_external_link_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ext.weights.h5"
    with _keras3(path) as f:
        f["layers/dense/vars/2"] = h5py.ExternalLink("/etc/passwd", "/x")
    assert keras3_h5.sniff(path, path.read_bytes()[:4096])
    _refused(keras3_h5, path, UnsafeFileError, "ExternalLink", "layers/dense/vars/2")


@pytest.mark.parametrize("reader", [keras_legacy_h5, keras3_h5])
def test_soft_link_is_refused(tmp_path: Path, reader) -> None:
    path = tmp_path / "soft.h5"
    if reader is keras_legacy_h5:
        with _legacy(path) as f:
            f["dense_1"]["dense_1"]["alias:0"] = h5py.SoftLink("/dense_1/dense_1/kernel:0")
            f["dense_1"].attrs["weight_names"] = np.array([b"dense_1/alias:0"])
    else:
        with _keras3(path) as f:
            f["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0")
    _refused(reader, path, UnsafeFileError, "SoftLink")


def test_external_dataset_storage_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "outside.bin"
    raw.write_bytes(np.arange(6, dtype="float32").tobytes())
    path = tmp_path / "external.weights.h5"
    with _keras3(path) as f:
        f["layers/dense/vars"].create_dataset("2", shape=(6,), dtype="float32",
                                              external=[(str(raw), 0, 24)])
    _refused(keras3_h5, path, UnsafeFileError, "external dataset storage")


def test_shape_bomb_is_refused_on_load_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.weights.h5"
    with _keras3(path) as f:  # 1 TiB declared, nothing stored: chunked + compressed fill value
        f["layers/dense/vars"].create_dataset("2", shape=(2**28, 1024), dtype="float32",
                                              chunks=(1024, 1024), compression="gzip")
    with keras3_h5.read(path) as ck:
        assert ck["layers/dense/vars/2"].shape == (2**28, 1024)  # the header is fine to show
        with pytest.raises(UnsafeFileError, match="bomb"):
            ck["layers/dense/vars/2"].load()


@pytest.mark.parametrize("reader, name", [(keras_legacy_h5, "t.h5"), (keras3_h5, "t.weights.h5")])
def test_truncated_h5_is_a_format_error(tmp_path: Path, reader, name: str) -> None:
    path = tmp_path / name
    with (_legacy(path) if reader is keras_legacy_h5 else _keras3(path)) as f:
        f.create_dataset("padding", data=np.arange(4096, dtype="float64"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert keras_legacy_h5.sniff(path, path.read_bytes()[:4096])  # HDF5 signature survives
    _refused(keras_legacy_h5, path, FormatError, "HDF5")


def _keras_zip(path: Path, *, compression: int = zipfile.ZIP_STORED) -> None:
    weights = path.with_suffix(".tmp.h5")
    _keras3(weights).close()
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        zf.write(weights, "model.weights.h5")
    weights.unlink()


def test_truncated_keras_zip_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    _keras_zip(path)
    with keras3_zip.read(path) as ck:  # the intact archive reads
        assert ck["layers/dense/vars/0"].load().shape == (2, 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert keras3_zip.sniff(path, path.read_bytes()[:4096])
    _refused(keras3_zip, path, FormatError, "zip")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_member_declaring_a_huge_size_is_refused(tmp_path: Path, compression: int) -> None:
    path = tmp_path / "bomb.keras"
    _keras_zip(path, compression=compression)
    data = bytearray(path.read_bytes())
    # Patch the central directory record of model.weights.h5: uncompressed size -> ~4 GiB.
    at = data.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + name_len] == b"model.weights.h5":
            break
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", data, at + 24, 0xFFFF0000)
    path.write_bytes(bytes(data))
    _refused(keras3_zip, path, UnsafeFileError, "model.weights.h5", "declares")


def test_layer_names_naming_a_missing_group(tmp_path: Path) -> None:
    path = tmp_path / "missing_layer.h5"
    _legacy(path, layer_names=["dense_1", "dense_2"]).close()
    _refused(keras_legacy_h5, path, FormatError, "dense_2", "layer_names", "does not exist")


def test_weight_names_pointing_at_a_missing_dataset(tmp_path: Path) -> None:
    path = tmp_path / "missing_weight.h5"
    _legacy(path, weight_names=["dense_1/kernel:0", "dense_1/gamma:0"]).close()
    _refused(keras_legacy_h5, path, FormatError, "dense_1/gamma:0", "weight_names")


def test_shard_outside_the_index_folder_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "m.weights.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        "/layers/dense/vars": "../elsewhere/m_00000.weights.h5"}}))
    assert keras3_h5.sniff(index, index.read_bytes())
    _refused(keras3_h5, index, UnsafeFileError, "outside")


def test_missing_shard_is_a_format_error(tmp_path: Path) -> None:
    index = tmp_path / "m.weights.json"
    index.write_text(json.dumps({"weight_map": {"/layers/dense/vars": "m_00000.weights.h5"}}))
    _refused(keras3_h5, index, FormatError, "m_00000.weights.h5", "missing")


def test_model_config_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "badconfig.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b"{not json"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([], dtype="S1")
    _refused(keras_legacy_h5, path, FormatError, "model_config", "JSON")


def test_random_bytes_with_an_hdf5_signature(tmp_path: Path) -> None:
    path = tmp_path / "noise.h5"
    rng = np.random.default_rng(7)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert not keras3_h5.sniff(path, path.read_bytes()[:4096])
    _refused(keras_legacy_h5, path, FormatError, "HDF5")
