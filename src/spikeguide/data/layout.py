"""Finding a dataset's files on disk, and saying clearly what is missing."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SpikeguideError


def check_split(dataset: str, split: str, allowed: tuple[str, ...] = ("train", "test")) -> None:
    if split not in allowed:
        raise SpikeguideError(f"{dataset}: unknown split {split!r}; use one of {', '.join(allowed)}")


def natural_key(name: str) -> tuple:
    """Sort key putting ``9.jpg`` before ``10.jpg``: digit runs compare as numbers; the name
    itself breaks ties (``01.jpg`` vs ``1.jpg``) so the order never depends on the filesystem."""
    # re.split with a group alternates text, number, text, ... so types line up position by position
    parts = tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))
    return parts, name


def missing_data(dataset: str, root, expected: str, source: str, download: bool) -> SpikeguideError:
    """The error for absent data: the layout expected, where the files come from, --download."""
    fetch = " or pass --download (option download=true) to fetch and verify them" if download else ""
    where = "data.root (not set)" if root is None else f"data.root {str(root)!r}"
    if root is not None and not Path(root).is_absolute():
        where += f" (relative to the working directory {str(Path.cwd())!r})"
    return SpikeguideError(
        f"{dataset}: no data found at {where}; expected {expected}. "
        f"Get the official files from {source}{fetch}"
    )


def find_dir(root, names: tuple[str, ...], dataset: str, expected: str, source: str,
             download: bool = False) -> Path:
    """The first of ``root/name`` for ``name`` in ``names`` ("" means root itself) that exists."""
    if root is None:
        raise missing_data(dataset, None, expected, source, download)
    root = Path(root).expanduser()
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise missing_data(dataset, root, expected, source, download)


def subfolders(folder: Path) -> list[Path]:
    """Folders in ``folder``, sorted by name (the class index order of class folders)."""
    return sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: d.name)


def class_dirs(folder: Path, dataset: str, expected: str) -> list[Path]:
    """Class folders of ``folder``, sorted by name (the class index order)."""
    dirs = subfolders(folder)
    if not dirs:
        raise SpikeguideError(f"{dataset}: {folder} has no class folders; expected {expected}")
    return dirs
