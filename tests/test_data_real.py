"""Real data from ../shared/data, unpacked into the ignored folder data/ (see docs/data.md).

Slow: decoding 60,000 JPEGs takes minutes on a few cores the first time (later runs read the
cache in $SPIKEGUIDE_CACHE or ~/.cache/spikeguide).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from spikeguide.data import build_dataset

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPEG = REPO / "data" / "CIFAR-10-images-jpg"
EXACT = REPO.parent / "shared" / "data" / "cifar10-exact-subset.npz"
MNIST = REPO.parent / "shared" / "data" / "mnist"
NMNIST = REPO / "data" / "NMNIST-small"

pytestmark = pytest.mark.slow


def need(*paths):
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data absent: {', '.join(missing)} (see docs/data.md to unpack it)")


def test_cifar10_jpeg_copy():
    need(CIFAR_JPEG, EXACT)
    train = build_dataset("imagefolder", CIFAR_JPEG, "train")
    test = build_dataset("imagefolder", CIFAR_JPEG, "test")
    assert train.x.shape == (50_000, 3, 32, 32) and test.x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train.y).tolist() == [5_000] * 10
    assert torch.bincount(test.y).tolist() == [1_000] * 10
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
    exact = np.load(EXACT)
    labels = torch.from_numpy(exact["test_batch_labels_all"].astype(np.int64))
    # official order = for each image, its class and its rank within the class
    rank = torch.empty_like(labels)
    for c in range(10):
        where = (labels == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    official = labels * 1_000 + rank  # index into our class-major, naturally sorted order
    assert torch.equal(test.y[official], labels)
    originals = torch.from_numpy(exact["test_batch_images"])
    error = (test.x[official[: len(originals)]].float() - originals.float()).abs().mean()
    assert error < 10  # a lossy copy: about 5.8 / 255 per value on average


def test_mnist_official_files():
    need(MNIST)
    train, test = build_dataset("mnist", MNIST, "train"), build_dataset("mnist", MNIST, "test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert test.y[:5].tolist() == [7, 2, 1, 0, 4]


def test_nmnist_small():
    need(NMNIST)
    train = build_dataset("nmnist", NMNIST, "train", frames=8)
    test = build_dataset("nmnist", NMNIST, "test", frames=8)
    assert train.x.shape == (1_000, 8, 2, 34, 34) and len(test) == 100
    folders = sorted(p.parent.name for p in (NMNIST / "NMNIST" / "Test").glob("*/*.bin"))
    assert test.y.tolist() == [int(d) for d in folders]
    assert (train.x.flatten(1).sum(1) > 0).all()
