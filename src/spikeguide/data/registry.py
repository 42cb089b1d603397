"""Dataset registry: ``register_dataset`` for builders, ``build_dataset`` for the Trainer."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from ..errors import SpikeguideError
from ..registry import Registry
from .base import ArrayDataset

DATASETS: Registry[Callable[..., ArrayDataset]] = Registry("dataset")
register_dataset = DATASETS.register


def build_dataset(name: str, root: str | Path | None, split: str, **options) -> ArrayDataset:
    """Build split ``split`` of dataset ``name`` from ``root``; unknown options are errors."""
    builder = DATASETS.get(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
        for key in options:
            if key not in known:
                raise SpikeguideError(f"dataset {name!r} has no option {key!r}; "
                                      f"its options: {', '.join(known) or 'none'}")
    dataset = builder(root, split, **options)
    dataset.info = {"dataset": name, "split": split, **dataset.info}
    return dataset
