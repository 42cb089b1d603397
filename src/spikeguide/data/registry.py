"""Dataset registry: ``register_dataset`` for builders; ``open_dataset`` and ``build_dataset``
to call them.

A builder returns either dataset kind: an :class:`ArrayDataset` (read whole into memory) or an
:class:`ImageFiles` (a list of files, which the streaming loader decodes batch by batch).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from ..errors import SpikeguideError
from ..registry import Registry
from .base import ArrayDataset
from .imagefiles import ImageFiles

Dataset = ArrayDataset | ImageFiles

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
register_dataset = DATASETS.register


def open_dataset(name: str, root: str | Path | None, split: str, **options) -> Dataset:
    """Split ``split`` of dataset ``name`` as its builder returns it; unknown options are errors."""
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


def build_dataset(name: str, root: str | Path | None, split: str, **options) -> ArrayDataset:
    """Split ``split`` of dataset ``name`` held in memory (image files decoded and cached)."""
    dataset = open_dataset(name, root, split, **options)
    return dataset.decode() if isinstance(dataset, ImageFiles) else dataset
