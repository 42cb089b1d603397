"""Datasets held in memory as tensors, a device-side loader and batched augmentation.

Importing this package registers every built-in dataset builder.
"""

from . import cifar, cifar10dvs, digits, imagefolder, mnist, nmnist  # noqa: F401  (registration)
from .augment import Augment
from .base import ArrayDataset
from .loader import InMemoryLoader
from .registry import DATASETS, build_dataset, register_dataset

__all__ = ["ArrayDataset", "DATASETS", "register_dataset", "build_dataset", "InMemoryLoader",
           "Augment"]
