import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from spikeguide.data import Augment, policies
from spikeguide.data.augment import POLICIES, crop_batch, cutout_batch, flip_batch, roll_batch
from spikeguide.errors import SpikeguideError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=8, c=3, h=8, w=8, seed=0):
    return torch.randint(0, 256, (b, c, h, w), generator=gen(seed)).to(torch.uint8)


GRID = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3).repeat(2, 1, 1, 1)


def test_crop_with_known_offsets():
    out = crop_batch(GRID, 1, torch.tensor([0, 2]), torch.tensor([1, 0]))
    assert out[0, 0].tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    assert out[1, 0].tolist() == [[0, 4, 5], [0, 7, 8], [0, 0, 0]]
    assert torch.equal(crop_batch(GRID, 1, torch.tensor([1, 1]), torch.tensor([1, 1])), GRID)


def test_flip_roll_cutout_exact():
    flipped = flip_batch(GRID, torch.tensor([True, False]))
    assert flipped[0, 0].tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]] and torch.equal(flipped[1], GRID[1])
    rolled = roll_batch(GRID, torch.tensor([1, 0]), torch.tensor([0, -1]))
    assert rolled[0, 0].tolist() == [[7, 8, 9], [1, 2, 3], [4, 5, 6]]
    assert rolled[1, 0].tolist() == [[2, 3, 1], [5, 6, 4], [8, 9, 7]]
    cut = cutout_batch(GRID.float(), 2, torch.tensor([1, 0]), torch.tensor([1, 2]))
    assert cut[0, 0].tolist() == [[0, 0, 3], [0, 0, 6], [7, 8, 9]]
    assert cut[1, 0].tolist() == [[1, 0, 0], [4, 5, 6], [7, 8, 9]]  # clipped at the border


def test_augment_crop_uses_the_generator_draws():
    x = images()
    out = Augment(crop_padding=2)(x, gen(5))
    g = gen(5)
    top, left = torch.randint(0, 5, (8,), generator=g), torch.randint(0, 5, (8,), generator=g)
    assert torch.equal(out, crop_batch(x, 2, top, left).float() / 255)


def test_normalize_is_exact_and_deterministic():
    x = images(c=3)
    aug = Augment(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    expected = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.5]).view(3, 1, 1)
    assert torch.allclose(aug.normalize(x), expected) and aug.normalize(x).dtype == torch.float32
    assert torch.equal(Augment().normalize(x), x.float() / 255)
    events = torch.randint(0, 9, (2, 3, 2, 4, 4), dtype=torch.uint8)
    assert torch.equal(Augment().normalize(events), events.float())  # counts stay counts


@pytest.mark.parametrize("policy", [None, "autoaugment", "trivialaugment"])
def test_determinism_from_the_generator_only(policy):
    x = images(b=32)
    aug = Augment(crop_padding=4, flip=True, cutout=3, policy=policy, mean=(0.5,) * 3, std=(0.25,) * 3)
    global_state = torch.get_rng_state()
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(x, images(b=32))  # input untouched


def test_event_frames_share_one_draw_across_time():
    frame = torch.randint(0, 5, (6, 1, 2, 5, 5), dtype=torch.uint8)
    x = frame.repeat(1, 4, 1, 1, 1)  # the same frame at all T=4 steps
    out = Augment(flip=True, roll=2, cutout=2)(x, gen(3))
    assert out.shape == x.shape
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(4))
    with pytest.raises(SpikeguideError, match="policies apply to static images"):
        Augment(policy="autoaugment")(x, gen(0))


def test_bad_settings():
    with pytest.raises(SpikeguideError, match="unknown policy 'randaugment'"):
        Augment(policy="randaugment")
    with pytest.raises(SpikeguideError, match="both mean and std"):
        Augment(mean=(0.5,))
    with pytest.raises(SpikeguideError, match=">= 0"):
        Augment(cutout=-1)


def test_policy_outputs_stay_in_range():
    for policy in POLICIES:
        out = Augment(policy=policy)(images(b=64, h=12, w=12), gen(0))
        assert out.min() >= 0 and out.max() <= 1


def test_policy_tables_match_torchvision():
    assert len(policies.CIFAR10_POLICY) == 25
    auto = policies.magnitude_table("autoaugment", 32, 32)
    assert auto[policies.OPS.index("Posterize")].tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert auto[policies.OPS.index("TranslateX"), 9] == pytest.approx(150 / 331 * 32)
    wide = policies.magnitude_table("trivialaugment", 32, 32)
    assert wide.shape == (15, 31) and wide[policies.OPS.index("Rotate"), 30] == 135
    assert wide[policies.OPS.index("Posterize")].tolist()[::5] == [8, 7, 6, 5, 4, 3, 2]


def op(name, x, m):
    return policies.FUNCTIONS[name](x, torch.tensor(m, dtype=torch.float32))


def test_ops_by_hand():
    x = GRID.float() / 255
    assert torch.equal(op("Invert", x, [0, 0]), 1 - x)
    assert torch.equal(op("TranslateX", x, [1.7, -1.2])[0, 0] * 255, torch.tensor(
        [[0.0, 1, 2], [0, 4, 5], [0, 7, 8]]))
    assert torch.equal(op("TranslateY", x, [1, 0])[0, 0, 0], torch.zeros(3))
    assert torch.allclose(op("Rotate", x, [0, 0]), x)
    rotated = op("Rotate", x, [90, -90])
    assert {tuple(rotated[0, 0].flatten().tolist()), tuple(rotated[1, 0].flatten().tolist())} == {
        tuple(torch.rot90(x[0, 0], k).flatten().tolist()) for k in (1, 3)}
    solarized = (op("Solarize", x, [5, 255]) * 255).round()
    assert solarized[0, 0].tolist() == [[1, 2, 3], [4, 250, 249], [248, 247, 246]]
    assert torch.equal(solarized[1], GRID[1].float())  # threshold 255: nothing reaches it
    posterized = op("Posterize", torch.full((1, 1, 1, 1), 0xB7 / 255), [4]) * 255
    assert posterized.round().item() == 0xB0
    assert torch.allclose(op("Brightness", x, [-1, 0]), torch.stack([torch.zeros_like(x[0]), x[1]]))
    assert torch.allclose(op("Sharpness", x, [0, 0]), x)
    assert torch.allclose(op("ShearX", x, [0, 0]), x)


def test_equalize_matches_pil():
    x = images(b=3, c=3, h=9, w=7, seed=4)
    x[1] = x[1] // 8 + 100  # a narrow histogram
    x[2] = 77  # a flat image stays unchanged
    ours = (op("Equalize", x.float() / 255, [0, 0, 0]) * 255).round().to(torch.uint8)
    for i in range(3):
        pil = np.asarray(ImageOps.equalize(Image.fromarray(x[i].permute(1, 2, 0).numpy())))
        assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), pil)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_gives_the_same_augmentation_on_cuda():
    x = images(b=16)
    aug = Augment(crop_padding=4, flip=True, cutout=4, policy="autoaugment", mean=(0.5,) * 3, std=(0.2,) * 3)
    assert torch.allclose(aug(x, gen(9)), aug(x.cuda(), gen(9)).cpu(), atol=1e-5)
