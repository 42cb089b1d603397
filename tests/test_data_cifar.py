import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from spikeguide.data import build_dataset, cifar
from spikeguide.data.download import fetch
from spikeguide.errors import SpikeguideError


def write_batch(path, data, labels, label_key=b"labels", protocol=2):
    batch = {b"batch_label": b"test", label_key: labels, b"data": data,
             b"filenames": [b"x.png"] * len(labels)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", images(2, i), [i, (i + 1) % 10], protocol=2 if i % 2 else 4)
    write_batch(folder / "test_batch", images(3, 9), [7, 8, 9])
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}))
    return tmp_path


def test_cifar10_exact_values(cifar10_root):
    train = build_dataset("cifar10", cifar10_root, "train")
    assert train.x.shape == (10, 3, 32, 32) and train.x.dtype == torch.uint8
    assert train.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    # row-major 3072 = 3 planes of 32x32: channel 0 is the first 1024 bytes
    raw = images(2, 1)[1]
    assert train.x[1, 0, 0, 0] == raw[0] and train.x[1, 1, 0, 0] == raw[1024]
    assert train.x[1, 2, 31, 31] == raw[3071] and train.x[1, 0, 1, 0] == raw[32]
    test = build_dataset("cifar10", cifar10_root / "cifar-10-batches-py", "test")  # folder itself
    assert test.y.tolist() == [7, 8, 9] and test.classes[7] == "class7"
    assert test.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", 4), ("test", 2)):
        batch = {b"data": images(n, n), b"fine_labels": list(range(95, 95 + n)),
                 b"coarse_labels": [0] * n}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    names = [f"f{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))
    ds = build_dataset("cifar100", tmp_path, "train")
    assert ds.y.tolist() == [95, 96, 97, 98] and ds.num_classes == 100
    assert np.array_equal(ds.x.reshape(4, -1).numpy(), images(4, 4))


def test_truncated_batch_names_the_file(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SpikeguideError, match="data_batch_3.*truncated"):
        build_dataset("cifar10", cifar10_root, "train")


def test_wrong_shape_and_foreign_objects_are_refused(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    write_batch(folder / "test_batch", np.zeros((3, 100), np.uint8), [1, 2, 3])
    with pytest.raises(SpikeguideError, match="test_batch is not an official batch"):
        build_dataset("cifar10", cifar10_root, "test")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": tarfile.TarFile}))
    with pytest.raises(SpikeguideError, match="test_batch.*unexpected object tarfile.TarFile"):
        build_dataset("cifar10", cifar10_root, "test")


def test_missing_data_explains_layout_source_and_download(tmp_path):
    with pytest.raises(SpikeguideError) as err:
        build_dataset("cifar10", tmp_path, "train")
    message = str(err.value)
    assert "cifar-10-batches-py/{data_batch_1" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "--download" in message


def tarball(tmp_path, source_root):
    archive = tmp_path / "upstream" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_from_file_url(tmp_path, cifar10_root, monkeypatch):
    archive, md5 = tarball(tmp_path, cifar10_root)
    fmt = cifar.FORMATS["cifar10"]
    monkeypatch.setitem(cifar.FORMATS, "cifar10", cifar.CifarFormat(
        **{**fmt.__dict__, "url": archive.as_uri(), "md5": md5}))
    target = tmp_path / "fresh"
    ds = build_dataset("cifar10", target, "test", download=True)
    assert ds.y.tolist() == [7, 8, 9]
    assert not (target / "cifar-10-python.tar.gz").exists()  # archive removed after unpacking


def test_download_checksum_mismatch(tmp_path, cifar10_root):
    archive, md5 = tarball(tmp_path, cifar10_root)
    dest = tmp_path / "out" / "file.tar.gz"
    with pytest.raises(SpikeguideError, match=f"checksum mismatch.*expected {'0' * 32}"):
        fetch(archive.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not dest.with_name("file.tar.gz.part").exists()
    assert fetch(archive.as_uri(), dest, md5).read_bytes() == archive.read_bytes()


def test_download_failure_is_clear(tmp_path):
    with pytest.raises(SpikeguideError, match="download of .*missing.tar.gz"):
        fetch((tmp_path / "missing.tar.gz").as_uri(), tmp_path / "x", "0" * 32)
