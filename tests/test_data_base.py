import pytest
import torch

from spikeguide.data import DATASETS, ArrayDataset, build_dataset, register_dataset
from spikeguide.errors import SpikeguideError


def make(labels, temporal=False):
    y = torch.tensor(labels, dtype=torch.int64)
    shape = (len(labels), 3, 2, 4, 4) if temporal else (len(labels), 3, 4, 4)
    x = torch.arange(len(labels), dtype=torch.uint8).view(-1, *[1] * (len(shape) - 1)).expand(shape)
    return ArrayDataset(x=x.contiguous(), y=y, classes=["a", "b", "c"])


def test_properties():
    ds = make([0, 1, 2, 0])
    assert (len(ds), ds.num_classes, ds.in_channels, ds.is_temporal) == (4, 3, 3, False)
    ev = make([0, 1], temporal=True)
    assert (ev.in_channels, ev.is_temporal) == (2, True)


def test_rejects_mismatched_tensors():
    with pytest.raises(ValueError):
        ArrayDataset(x=torch.zeros(3, 1, 2, 2, dtype=torch.uint8), y=torch.zeros(2, dtype=torch.int64), classes=["a"])
    with pytest.raises(ValueError):
        ArrayDataset(x=torch.zeros(2, 1, 2, 2, dtype=torch.uint8), y=torch.zeros(2), classes=["a"])


def test_subset_is_stratified_deterministic_and_ordered():
    ds = make([0] * 60 + [1] * 30 + [2] * 10)
    sub = ds.subset(10, seed=3)
    assert torch.bincount(sub.y).tolist() == [6, 3, 1]
    idx = sub.x[:, 0, 0, 0].long()
    assert torch.equal(idx, idx.sort().values)  # original order kept
    assert torch.equal(ds.y[idx], sub.y)  # images and labels stay paired
    assert torch.equal(sub.x, ds.subset(10, seed=3).x)
    assert not torch.equal(sub.x, ds.subset(10, seed=4).x)
    assert sub.info["subset"] == {"n": 10, "seed": 3, "rule": "stratified"}


def test_subset_remainder_goes_to_largest_fraction():
    ds = make([0] * 5 + [1] * 3 + [2] * 2)
    # quotas 2.5, 1.5, 1.0 -> floor 2, 1, 1; one left over goes to class 0 (tie, lowest index)
    assert torch.bincount(ds.subset(5, seed=0).y).tolist() == [3, 1, 1]
    with pytest.raises(SpikeguideError, match="subset size"):
        ds.subset(11)


def test_build_dataset_checks_options_and_records_info():
    @register_dataset("tiny_for_test")
    def tiny(root, split, *, size: int = 2):
        return ArrayDataset(x=torch.zeros(size, 1, 2, 2, dtype=torch.uint8),
                            y=torch.zeros(size, dtype=torch.int64), classes=["a"], info={"size": size})

    try:
        ds = build_dataset("tiny_for_test", None, "train", size=3)
        assert len(ds) == 3 and ds.info == {"dataset": "tiny_for_test", "split": "train", "size": 3}
        with pytest.raises(SpikeguideError, match="no option 'sise'.*size"):
            build_dataset("tiny_for_test", None, "train", sise=3)
        with pytest.raises(SpikeguideError, match="unknown dataset"):
            build_dataset("tiny_for_tests_x", None, "train")
    finally:
        DATASETS._entries.pop("tiny_for_test")


def test_unknown_split_is_an_error():
    with pytest.raises(SpikeguideError, match="unknown split 'valid'"):
        build_dataset("cifar10", "/nonexistent", "valid")


def test_natural_order():
    from spikeguide.data.layout import natural_key

    names = ["10.jpg", "9.jpg", "1.jpg", "01.jpg", "cat_10", "cat_9"]
    assert sorted(names, key=natural_key) == ["01.jpg", "1.jpg", "9.jpg", "10.jpg", "cat_9", "cat_10"]
