import os

import numpy as np
import pytest
import torch

from spikeguide.data import build_dataset, events
from spikeguide.data.cifar10dvs import read_aedat
from spikeguide.data.events import Events, Framing, to_frames
from spikeguide.data.nmnist import read_bin
from spikeguide.errors import SpikeguideError

AEDAT_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file created by saveaerdat.m\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
)


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGUIDE_CACHE", str(tmp_path / "cache"))


def bin_bytes(x, y, p, t):
    x, y, p, t = (np.asarray(v, np.int64) for v in (x, y, p, t))
    rows = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], 1)
    return rows.astype(np.uint8).tobytes()


def aedat_bytes(raw_x, raw_y, raw_p, t):
    addr = (np.asarray(raw_y) << 8) | (np.asarray(raw_x) << 1) | np.asarray(raw_p)
    return AEDAT_HEADER + np.stack([addr, t], 1).astype(">u4").tobytes()


def test_read_bin_exact(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(bin_bytes([0, 33, 5], [1, 2, 33], [1, 0, 1], [7, 0x7FFFFF, 65536 + 258]))
    ev = read_bin(path)
    assert ev.x.tolist() == [0, 33, 5] and ev.y.tolist() == [1, 2, 33]
    assert ev.p.tolist() == [1, 0, 1] and ev.t.tolist() == [7, 0x7FFFFF, 65794]


def test_read_aedat_exact_and_orientation(tmp_path):
    path = tmp_path / "a.aedat"
    path.write_bytes(aedat_bytes([3, 127], [10, 0], [1, 0], [100, 2**32 - 1]))
    ev = read_aedat(path)
    # column = 127 - y, row = 127 - x, polarity = 1 - bit (SpikingJelly's orientation)
    assert ev.x.tolist() == [117, 127] and ev.y.tolist() == [124, 0]
    assert ev.p.tolist() == [0, 1] and ev.t.tolist() == [100, 2**32 - 1]


def test_frames_by_count_and_by_time():
    ev = Events(t=np.array([0, 10, 20, 90, 95, 99]), x=np.array([0, 1, 1, 2, 2, 2]),
                y=np.array([0, 0, 0, 1, 1, 1]), p=np.array([0, 1, 1, 0, 0, 1]))
    by_count = to_frames(ev, Framing(3, "count", (2, 3), (2, 3)))  # 2 events a frame
    expected = np.zeros((3, 2, 2, 3), np.uint8)
    expected[0, 0, 0, 0] = expected[0, 1, 0, 1] = 1
    expected[1, 1, 0, 1] = expected[1, 0, 1, 2] = 1
    expected[2, 0, 1, 2] = expected[2, 1, 1, 2] = 1
    assert np.array_equal(by_count, expected)
    by_time = to_frames(ev, Framing(2, "time", (2, 3), (2, 3)))  # span 100 us: t < 50 | t >= 50
    assert by_time[0].sum() == 3 and by_time[1, 0, 1, 2] == 2 and by_time[1, 1, 1, 2] == 1
    pooled = to_frames(ev, Framing(1, "count", (2, 3), (1, 1)))
    assert pooled.tolist() == [[[[3]], [[3]]]]


def test_counts_clip_at_255():
    n = 300
    ev = Events(t=np.arange(n), x=np.zeros(n, np.int64), y=np.zeros(n, np.int64), p=np.zeros(n, np.int64))
    assert to_frames(ev, Framing(1, "count", (1, 1), (1, 1)))[0, 0, 0, 0] == 255


def test_framing_options_are_checked():
    with pytest.raises(SpikeguideError, match="framing must be 'count' or 'time'"):
        Framing(4, "number", (34, 34), (34, 34))
    with pytest.raises(SpikeguideError, match="frames must be at least 1"):
        Framing(0, "count", (34, 34), (34, 34))


def nmnist_tree(root, per_class=2):
    for split in ("Train", "Test"):
        for digit in range(3):
            folder = root / "NMNIST" / split / str(digit)
            folder.mkdir(parents=True)
            for k in range(per_class):
                n = digit + k + 1
                (folder / f"{k:05d}.bin").write_bytes(
                    bin_bytes([digit] * n, [k] * n, [k % 2] * n, np.arange(n) * 1000))
    return root


def test_nmnist_frames_and_labels(tmp_path):
    root = nmnist_tree(tmp_path / "nm")
    ds = build_dataset("nmnist", root, "train", frames=1, workers=1)
    assert ds.x.shape == (6, 1, 2, 34, 34) and ds.x.dtype == torch.uint8 and ds.is_temporal
    assert ds.y.tolist() == [0, 0, 1, 1, 2, 2] and ds.classes == ["0", "1", "2"]
    # sample 3 is digit 1, file k=1: 3 events at x=1, y=1, polarity 1
    assert ds.x[3, 0, 1, 1, 1] == 3 and ds.x[3].sum() == 3
    assert ds.mean is None and ds.in_channels == 2
    assert ds.info == {"dataset": "nmnist", "split": "train", "frames": 1, "framing": "count",
                       "resolution": [34, 34], "frame_dtype": "uint8 event counts clipped at 255"}
    parallel = build_dataset("nmnist", root / "NMNIST", "test", frames=1, workers=2)
    assert torch.equal(parallel.x, build_dataset("nmnist", root, "test", frames=1, workers=1,
                                                 cache_dir=tmp_path / "c2").x)


def test_nmnist_bad_length_names_the_file(tmp_path):
    root = nmnist_tree(tmp_path / "nm")
    bad = root / "NMNIST" / "Train" / "1" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(SpikeguideError, match="00001.bin is 13 bytes, not a multiple of 5"):
        build_dataset("nmnist", root, "train", workers=1)


def test_events_outside_the_sensor_name_the_file(tmp_path):
    root = nmnist_tree(tmp_path / "nm")
    bad = root / "NMNIST" / "Test" / "2" / "00000.bin"
    bad.write_bytes(bin_bytes([40], [0], [0], [0]))
    with pytest.raises(SpikeguideError, match="00000.bin: 1 events fall outside the 34x34 sensor"):
        build_dataset("nmnist", root, "test", workers=1)


def test_nmnist_missing_layout(tmp_path):
    with pytest.raises(SpikeguideError, match=r"\{Train,Test\}/<digit 0-9>/\*.bin.*garrickorchard"):
        build_dataset("nmnist", tmp_path, "train")


def dvs_tree(root, classes=("airplane", "automobile"), per_class=10):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            n = i + 1  # file i holds i + 1 events, which identifies it in the frames
            (root / c / f"cifar10_{c}_{i}.aedat").write_bytes(
                aedat_bytes([0] * n, [0] * n, [0] * n, np.arange(n)))
    return root


def test_cifar10dvs_split_rules_and_resolution(tmp_path):
    root = dvs_tree(tmp_path / "dvs")
    train = build_dataset("cifar10dvs", root, "train", frames=1, workers=1)
    test = build_dataset("cifar10dvs", root, "test", frames=1, workers=1)
    # natural order 0..9: first90 trains on files 0-8 and tests on file 9
    assert train.x.sum((1, 2, 3, 4)).tolist() == list(range(1, 10)) * 2
    assert test.x.sum((1, 2, 3, 4)).tolist() == [10, 10] and test.y.tolist() == [0, 1]
    assert train.info["split_rule"] == "first90" and train.classes == ["airplane", "automobile"]
    last = build_dataset("cifar10dvs", root, "test", split_rule="last90", frames=1, workers=1)
    assert last.x.sum((1, 2, 3, 4)).tolist() == [1, 1]
    # raw x = y = 0, bit 0 -> row 127, column 127, polarity channel 1
    assert test.x.shape == (2, 1, 2, 128, 128) and test.x[0, 0, 1, 127, 127] == 10
    small = build_dataset("cifar10dvs", root, "test", resolution=48, frames=1, workers=1)
    assert small.x.shape == (2, 1, 2, 48, 48) and small.x[0, 0, 1, 47, 47] == 10
    assert small.info["resolution"] == [48, 48]
    with pytest.raises(SpikeguideError, match="unknown split_rule 'random'"):
        build_dataset("cifar10dvs", root, "test", split_rule="random")


def test_aedat_corruption_names_the_file(tmp_path):
    root = dvs_tree(tmp_path / "dvs", per_class=2)  # file 1 of each class is the test split
    bad = root / "automobile" / "cifar10_automobile_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(SpikeguideError, match="cifar10_automobile_1.aedat has 13 bytes of events"):
        build_dataset("cifar10dvs", root, "test", workers=1)
    bad.write_bytes(b"#!AER-DAT3.1\r\n")
    with pytest.raises(SpikeguideError, match="cifar10_automobile_1.aedat does not start with"):
        build_dataset("cifar10dvs", root, "test", workers=1)
    bad.write_bytes(b"#!AER-DAT2.0\r\n# cut")
    with pytest.raises(SpikeguideError, match="cifar10_automobile_1.aedat ends inside its header"):
        build_dataset("cifar10dvs", root, "test", workers=1)


def test_frame_cache_is_keyed_by_options_and_files(tmp_path, monkeypatch):
    root = nmnist_tree(tmp_path / "nm")
    first = build_dataset("nmnist", root, "train", frames=2, workers=1)
    real = events.build_frames
    calls = []
    monkeypatch.setattr(events, "build_frames", lambda *a: calls.append(a[2]) or real(*a))
    assert torch.equal(build_dataset("nmnist", root, "train", frames=2, workers=1).x, first.x)
    assert calls == []
    build_dataset("nmnist", root, "train", frames=3, workers=1)
    build_dataset("nmnist", root, "train", frames=2, framing="time", workers=1)
    build_dataset("nmnist", root, "test", frames=2, workers=1)
    assert [(f.frames, f.mode) for f in calls] == [(3, "count"), (2, "time"), (2, "count")]
    for options in ({"frames": 3}, {"frames": 2, "framing": "time"}, {"frames": 2}):
        build_dataset("nmnist", root, "train", workers=1, **options)
    assert len(calls) == 3  # every variant now comes from its own cache slot

    changed = root / "NMNIST" / "Train" / "0" / "00000.bin"
    changed.write_bytes(bin_bytes([9], [9], [0], [0]))
    os.utime(changed, ns=(1, 1))
    rebuilt = build_dataset("nmnist", root, "train", frames=2, workers=1)
    assert len(calls) == 4 and rebuilt.x[0, :, 0, 9, 9].sum() == 1
