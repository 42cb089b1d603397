import pytest
import torch

from spikeguide.data import ArrayDataset, InMemoryLoader
from spikeguide.data.loader import mix_seed
from spikeguide.errors import SpikeguideError


def dataset(n=23):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ArrayDataset(x=x, y=torch.arange(n) % 3, classes=["a", "b", "c"])


def ids(batches):
    return [x[:, 0, 0, 0].tolist() for x, _ in batches]


def test_order_is_a_function_of_seed_and_epoch():
    ds = dataset()
    a = InMemoryLoader(ds, 5, shuffle=True, drop_last=False, seed=7)
    b = InMemoryLoader(ds, 5, shuffle=True, drop_last=False, seed=7)
    b.set_epoch(3)
    b_epoch3 = ids(b)
    a.set_epoch(3)
    assert ids(a) == b_epoch3
    a.set_epoch(4)
    assert ids(a) != b_epoch3
    assert ids(InMemoryLoader(ds, 5, shuffle=True, drop_last=False, seed=8)) != ids(
        InMemoryLoader(ds, 5, shuffle=True, drop_last=False, seed=7))
    assert sorted(sum(b_epoch3, [])) == list(range(23))  # a permutation: every sample once


def test_batches_pair_images_with_labels_and_stay_uint8():
    for x, y in InMemoryLoader(dataset(), 4, shuffle=True, drop_last=True):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 2, 2)
        assert torch.equal(y, x[:, 0, 0, 0].long() % 3)


def test_len_and_drop_last():
    ds = dataset(23)
    keep = InMemoryLoader(ds, 5, shuffle=False, drop_last=False)
    drop = InMemoryLoader(ds, 5, shuffle=False, drop_last=True)
    assert (len(keep), len(drop)) == (5, 4)
    assert ids(keep)[-1] == [20, 21, 22] and ids(drop)[-1] == [15, 16, 17, 18, 19]
    assert len(ids(keep)) == 5 and len(ids(drop)) == 4


def test_iter_from_is_the_tail_of_the_epoch():
    loader = InMemoryLoader(dataset(), 4, shuffle=True, drop_last=False, seed=1)
    loader.set_epoch(2)
    full = ids(loader)
    assert ids(loader.iter_from(3)) == full[3:]
    assert ids(loader.iter_from(len(loader))) == []


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_concatenate_to_the_single_process_batch(drop_last):
    ds = dataset(23)
    single = InMemoryLoader(ds, 6, shuffle=True, drop_last=drop_last, seed=5)
    shards = [InMemoryLoader(ds, 6, shuffle=True, drop_last=drop_last, seed=5, rank=r, world_size=2)
              for r in range(2)]
    for loader in (single, *shards):
        loader.set_epoch(1)
    per_rank = [ids(s) for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == len(single)
    assert [a + b for a, b in zip(*per_rank)] == ids(single)
    assert all(len(batch) == 3 for batch in per_rank[0][: len(ds) // 6])


def test_bad_batch_sizes():
    with pytest.raises(SpikeguideError, match="multiple of the 4 processes"):
        InMemoryLoader(dataset(), 6, shuffle=False, drop_last=False, world_size=4)
    with pytest.raises(SpikeguideError, match="exceeds the 23 samples"):
        InMemoryLoader(dataset(), 64, shuffle=False, drop_last=True)


def test_mix_seed_separates_nearby_tuples():
    seeds = {mix_seed(s, e) for s in range(20) for e in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
