"""AutoAugment (the CIFAR-10 policy of Cubuk et al.) and TrivialAugmentWide, on a whole batch.

Ops, magnitudes and the policy table follow torchvision's ``transforms/autoaugment.py``. Every
sample draws its own op and magnitude; each op then runs once on the sub-batch that chose it,
so the Python loop runs over op kinds (at most 15), never over samples. Images are float
``[B, C, H, W]`` in [0, 1]; geometric ops use nearest sampling and fill with black, as
torchvision's defaults do.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .transfer import to_device

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
       "Invert")
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
          "Contrast", "Sharpness"}
TRIVIAL_OPS = OPS[:-1]  # TrivialAugmentWide has no Invert

# (op, probability, magnitude bin) pairs; a bin of None means the op takes no magnitude
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


@functools.lru_cache(maxsize=8)
def magnitude_table(policy: str, height: int, width: int) -> torch.Tensor:
    """``[len(OPS), bins]`` magnitudes (unsigned) of each op at each bin (CPU; not to be
    modified: it is built once)."""
    wide = policy == "trivialaugment"
    bins = 31 if wide else 10
    top = {
        "ShearX": 0.99 if wide else 0.3,
        "ShearY": 0.99 if wide else 0.3,
        "TranslateX": 32.0 if wide else 150.0 / 331.0 * width,
        "TranslateY": 32.0 if wide else 150.0 / 331.0 * height,
        "Rotate": 135.0 if wide else 30.0,
        **{op: 0.99 if wide else 0.9 for op in ("Brightness", "Color", "Contrast", "Sharpness")},
    }
    table = torch.zeros(len(OPS), bins)
    for op, high in top.items():
        table[OPS.index(op)] = torch.linspace(0.0, high, bins)
    bits_dropped = (torch.arange(bins) / ((bins - 1) / (6 if wide else 4))).round()
    table[OPS.index("Posterize")] = 8 - bits_dropped
    table[OPS.index("Solarize")] = torch.linspace(255.0, 0.0, bins)
    return table


def sample_stages(policy: str, batch: int, height: int, width: int,
                  generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per-sample ``(op index, signed magnitude, applied)`` for each stage of the policy.

    Drawn on the generator's device; the caller moves them to the batch's device.
    """
    dev = generator.device
    table = magnitude_table(policy, height, width).to(dev)
    signed = torch.tensor([op in SIGNED for op in OPS], device=dev)
    if policy == "autoaugment":
        ops = torch.tensor([[OPS.index(op) for op, _, _ in sub] for sub in CIFAR10_POLICY],
                           device=dev)
        probs = torch.tensor([[p for _, p, _ in sub] for sub in CIFAR10_POLICY], device=dev)
        bins = torch.tensor([[b or 0 for _, _, b in sub] for sub in CIFAR10_POLICY], device=dev)
        choice = torch.randint(len(CIFAR10_POLICY), (batch,), generator=generator, device=dev)
        draws = torch.rand(batch, 2, generator=generator, device=dev)
        negate = torch.randint(2, (batch, 2), generator=generator, device=dev) == 0
        stages = []
        for s in range(2):
            op = ops[choice, s]
            mag = table[op, bins[choice, s]]
            mag = torch.where(signed[op] & negate[:, s], -mag, mag)
            stages.append((op, mag, draws[:, s] <= probs[choice, s]))
        return stages
    op = torch.randint(len(TRIVIAL_OPS), (batch,), generator=generator, device=dev)
    mag = table[op, torch.randint(table.shape[1], (batch,), generator=generator, device=dev)]
    negate = torch.randint(2, (batch,), generator=generator, device=dev) == 0
    mag = torch.where(signed[op] & negate, -mag, mag)
    return [(op, mag, torch.ones(batch, dtype=torch.bool, device=dev))]


def apply_policy(x: torch.Tensor, policy: str, generator: torch.Generator,
                 batch: int | None = None, rows: slice = slice(None)) -> torch.Tensor:
    """``x`` float ``[B, C, H, W]`` in [0, 1], each sample augmented by its own draw; ``x`` may
    be the ``rows`` of a batch of ``batch`` samples, drawn for the whole batch.

    Which samples take which op is found on the generator's device (the host for a CPU
    generator), so that a GPU batch is never waited for; only the indices and magnitudes move.
    """
    x = x.clone()
    stages = sample_stages(policy, batch or x.shape[0], x.shape[2], x.shape[3], generator)
    for op, mag, applied in stages:
        op, applied, mag = op[rows], applied[rows], to_device(mag[rows], x.device)
        for k, name in enumerate(OPS):
            chosen = (applied & (op == k)).nonzero().squeeze(1)
            if name != "Identity" and chosen.numel():
                chosen = to_device(chosen, x.device)
                x[chosen] = FUNCTIONS[name](x[chosen], mag[chosen])
    return x


# --- geometric ops: output pixel (row, col) reads input pixel (sy, sx), nearest, black outside


def _coords(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    return rows, cols


def _sample(x: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    iy, ix = (sy + 0.5).floor().long().expand(n, h, w), (sx + 0.5).floor().long().expand(n, h, w)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    flat = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w) * inside.unsqueeze(1)


def _shear_x(x, m):
    rows, cols = _coords(x)
    return _sample(x, rows, cols + m.view(-1, 1, 1) * rows)  # about the top-left corner


def _shear_y(x, m):
    rows, cols = _coords(x)
    return _sample(x, rows + m.view(-1, 1, 1) * cols, cols)


def _translate_x(x, m):
    rows, cols = _coords(x)
    return _sample(x, rows, cols - m.trunc().view(-1, 1, 1))  # whole pixels, as int(magnitude)


def _translate_y(x, m):
    rows, cols = _coords(x)
    return _sample(x, rows - m.trunc().view(-1, 1, 1), cols)


def _rotate(x, degrees):
    rows, cols = _coords(x)
    cy, cx = (x.shape[2] - 1) / 2, (x.shape[3] - 1) / 2
    theta = torch.deg2rad(degrees).view(-1, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    dy, dx = rows - cy, cols - cx
    return _sample(x, sin * dx + cos * dy + cy, cos * dx - sin * dy + cx)


# --- colour ops, as torchvision's: blend with a degenerate image, factor 1 + magnitude


def _blend(x, degenerate, m):
    factor = (1.0 + m).view(-1, 1, 1, 1)
    return (factor * x + (1.0 - factor) * degenerate).clamp(0.0, 1.0)


def _gray(x):
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.2989, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _brightness(x, m):
    return _blend(x, torch.zeros_like(x), m)


def _color(x, m):
    return _blend(x, _gray(x), m)


def _contrast(x, m):
    return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), m)


def _sharpness(x, m):
    # PIL's smoothing kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as a 3x3 box sum plus 4 x centre
    degenerate = x.clone()  # border pixels stay as they are
    box = F.avg_pool2d(x, 3, stride=1) * 9.0
    degenerate[..., 1:-1, 1:-1] = (box + 4.0 * x[..., 1:-1, 1:-1]) / 13.0
    return _blend(x, degenerate, m)


def _levels(x):
    return (x * 255.0).round().long()


def _posterize(x, bits):
    keep = 256 - 2 ** (8 - bits.long())  # the top `bits` bits set
    return (_levels(x) & keep.view(-1, 1, 1, 1)).float() / 255.0


def _solarize(x, threshold):
    return torch.where(_levels(x) >= threshold.view(-1, 1, 1, 1), 1.0 - x, x)


def _autocontrast(x, _):
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, torch.ones_like(high), 1.0 / (high - low).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(low), low)) * scale).clamp(0.0, 1.0)


def _equalize(x, _):
    """Per-channel histogram equalisation with PIL's (and torchvision's) lookup-table rule."""
    n, c, h, w = x.shape
    levels = _levels(x).view(n * c, h * w)
    ones = torch.ones_like(levels, dtype=torch.float32)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, levels, ones)
    last = (torch.arange(256, device=x.device) * (hist > 0)).amax(1, keepdim=True)
    step = ((hist.sum(1, keepdim=True) - hist.gather(1, last)) / 255.0).floor()
    lut = ((hist.cumsum(1) + (step / 2).floor()) / step.clamp_min(1.0)).floor()
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = torch.where(step > 0, lut.gather(1, levels), levels.float())
    return out.view(n, c, h, w) / 255.0


def _invert(x, _):
    return 1.0 - x


FUNCTIONS = {
    "ShearX": _shear_x, "ShearY": _shear_y, "TranslateX": _translate_x, "TranslateY": _translate_y,
    "Rotate": _rotate, "Brightness": _brightness, "Color": _color, "Contrast": _contrast,
    "Sharpness": _sharpness, "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": _autocontrast, "Equalize": _equalize, "Invert": _invert,
}
