"""Datasets of two kinds and their loaders, and batched augmentation on the device.

An :class:`ArrayDataset` holds a whole split in memory as tensors (:class:`InMemoryLoader`); an
:class:`ImageFiles` lists a split's image files, which the :class:`StreamLoader` decodes batch
by batch in worker processes. :func:`make_loader` picks the loader of a dataset's kind.

Importing this package registers every built-in dataset builder.
"""

from . import cifar, cifar10dvs, digits, imagefolder, mnist, nmnist  # noqa: F401  (registration)
from .augment import Augment
from .base import ArrayDataset
from .choice import LOADERS, LoaderChoice, choose_loader
from .imagefiles import ImageFiles
from .loader import InMemoryLoader, StreamLoader, make_loader
from .registry import DATASETS, Dataset, build_dataset, open_dataset, register_dataset

__all__ = ["ArrayDataset", "ImageFiles", "Dataset", "DATASETS", "register_dataset",
           "build_dataset", "open_dataset", "InMemoryLoader", "StreamLoader", "make_loader",
           "LOADERS", "LoaderChoice", "choose_loader", "Augment"]
