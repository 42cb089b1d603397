import gzip
import hashlib

import numpy as np
import pytest

from spikeguide.data import build_dataset, mnist
from spikeguide.errors import SpikeguideError


def idx_bytes(array, magic_type=0x08):
    header = bytes((0, 0, magic_type, array.ndim)) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write(root, name, array, gz, prefix=""):
    data = idx_bytes(array)
    if gz:
        (root / f"{prefix}{name}.gz").write_bytes(gzip.compress(data))
    else:
        (root / f"{prefix}{name}").write_bytes(data)


IMAGES = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 251
LABELS = np.array([5, 0, 9])


@pytest.mark.parametrize("gz", [False, True])
def test_idx_exact_values(tmp_path, gz):
    write(tmp_path, "t10k-images-idx3-ubyte", IMAGES, gz)
    write(tmp_path, "t10k-labels-idx1-ubyte", LABELS, gz)
    ds = build_dataset("mnist", tmp_path, "test")
    assert ds.x.shape == (3, 1, 28, 28) and ds.in_channels == 1
    assert np.array_equal(ds.x[:, 0].numpy(), IMAGES) and ds.y.tolist() == [5, 0, 9]
    assert ds.mean == (0.1307,) and ds.classes == [str(i) for i in range(10)]


def test_prefix_and_classes_for_other_idx_datasets(tmp_path):
    write(tmp_path, "train-images-idx3-ubyte", IMAGES, True, prefix="emnist-letters-")
    write(tmp_path, "train-labels-idx1-ubyte", np.array([1, 26, 3]), True, prefix="emnist-letters-")
    with pytest.raises(SpikeguideError, match="label 26 but only 10 classes"):
        build_dataset("mnist", tmp_path, "train", prefix="emnist-letters-")
    ds = build_dataset("mnist", tmp_path, "train", prefix="emnist-letters-",
                       classes=["n/a"] + [chr(97 + i) for i in range(26)], mean=[0.17], std=[0.33])
    assert ds.y.tolist() == [1, 26, 3] and ds.classes[26] == "z" and ds.std == (0.33,)


def test_bad_magic_names_the_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(IMAGES, magic_type=0x0D))
    write(tmp_path, "t10k-labels-idx1-ubyte", LABELS, False)
    with pytest.raises(SpikeguideError, match="t10k-images-idx3-ubyte has magic number 0x00000d03"):
        build_dataset("mnist", tmp_path, "test")


def test_short_file_names_the_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(IMAGES)[:-1])
    write(tmp_path, "t10k-labels-idx1-ubyte", LABELS, False)
    with pytest.raises(SpikeguideError, match="t10k-images-idx3-ubyte holds 2367 bytes.*2368.*truncated"):
        build_dataset("mnist", tmp_path, "test")


def test_truncated_gzip_names_the_file(tmp_path):
    write(tmp_path, "t10k-images-idx3-ubyte", IMAGES, False)
    data = gzip.compress(idx_bytes(LABELS))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpikeguideError, match="cannot read .*t10k-labels-idx1-ubyte.gz"):
        build_dataset("mnist", tmp_path, "test")


def test_count_mismatch(tmp_path):
    write(tmp_path, "t10k-images-idx3-ubyte", IMAGES, False)
    write(tmp_path, "t10k-labels-idx1-ubyte", LABELS[:2], False)
    with pytest.raises(SpikeguideError, match="3 images but .* 2 labels"):
        build_dataset("mnist", tmp_path, "test")


def test_missing_files_point_to_source(tmp_path):
    with pytest.raises(SpikeguideError, match="t10k-images-idx3-ubyte.*ossci-datasets.*--download"):
        build_dataset("mnist", tmp_path, "test")


def test_download_verifies_each_file(tmp_path, monkeypatch):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    write(upstream, "t10k-images-idx3-ubyte", IMAGES, True)
    write(upstream, "t10k-labels-idx1-ubyte", LABELS, True)
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in upstream.iterdir()}
    monkeypatch.setattr(mnist, "URL", upstream.as_uri() + "/")
    monkeypatch.setattr(mnist, "MD5", md5)
    ds = build_dataset("mnist", tmp_path / "data", "test", download=True)
    assert ds.y.tolist() == [5, 0, 9]
    monkeypatch.setattr(mnist, "MD5", {**md5, "t10k-labels-idx1-ubyte.gz": "f" * 32})
    with pytest.raises(SpikeguideError, match="checksum mismatch.*t10k-labels"):
        build_dataset("mnist", tmp_path / "other", "test", download=True)
