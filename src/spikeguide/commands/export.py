"""``spikeguide export``: a trained run's SNN to a file other tools read (NIR)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SpikeguideError
from ..export.hub import save_hub_folder
from ..export.nir import export_nir
from ..training.build import load_model
from ..training.checkpoint import find_checkpoint

FORMATS = ("nir", "hub")


def export_run(path: str | Path, out: str | Path, fmt: str = "nir", prefer: str = "best",
               dt: float = 1.0, frame_shape: tuple[int, int, int] | None = None) -> Path:
    """Write the SNN of a run directory or checkpoint to ``out`` in format ``fmt``: ``nir`` (a
    file) or ``hub`` (a Hugging Face Hub-style folder, :mod:`spikeguide.export.hub`).

    ``frame_shape`` (C, H, W of one input frame) defaults to what the checkpoint recorded of its
    training data; ``dt`` is the time step the NIR neurons are written for (the neurons' time
    constants scale with it; snnTorch's importer expects 1e-4).
    """
    if fmt not in FORMATS:
        raise SpikeguideError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "hub":
        return save_hub_folder(path, out, prefer)
    model, cfg, ckpt = load_model(path, prefer)
    shape = frame_shape or ckpt["data"].get("frame_shape")
    if shape is None:
        raise SpikeguideError(f"{find_checkpoint(path, prefer)} does not record its input shape "
                              "(written by an older version): pass --frame-shape C H W")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_nir(model, out, tuple(shape), dt)
    return out
