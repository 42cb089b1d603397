"""Trained runs from Python: a model for inference, and the model names a recipe can use."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..export.hub import is_hub_folder, load_hub_folder
from ..models import MODELS, SpikingNet
from ..training.build import load_model


def load_run(path: str | Path, prefer: str = "best") -> tuple[SpikingNet, Config]:
    """The trained model (on the CPU, in eval mode) and the config of a run directory, a
    checkpoint file or a hub folder (``spikeguide export RUN --format hub``). ``prefer``: which
    checkpoint of a run directory, ``best`` or ``latest``. ``model(x)`` takes a normalised batch
    ``[B, C, H, W]`` (event frames ``[B, T, C, H, W]``) and returns time-averaged logits."""
    if is_hub_folder(path):
        return load_hub_folder(path)
    model, cfg, _ = load_model(str(path), prefer)
    return model.eval(), cfg


def list_models() -> list[str]:
    """The names ``[model] name`` accepts (those registered outside the package included)."""
    return MODELS.names()
