"""On-disk cache of decoded arrays, valid while the source files are unchanged.

A cache slot lives at ``<cache_dir>/<kind>/<hash of key>/`` where the key holds the data root,
the split and every option that changes the decoded arrays. The slot stores one ``.npy`` per
array and ``manifest.json`` (the key plus every source file's relative path, size and mtime),
written last so that a slot with a manifest is complete. A slot is reused only while the
manifest matches the files on disk; otherwise it is rebuilt in place, so stale data never
accumulates. The data root itself is never written (it may be read-only).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np


def cache_root(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$SPIKEGUIDE_CACHE``, else ``~/.cache/spikeguide``."""
    chosen = cache_dir or os.environ.get("SPIKEGUIDE_CACHE") or "~/.cache/spikeguide"
    return Path(chosen).expanduser()


def file_manifest(files: list[Path], base: Path) -> list[list]:
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns])
    return out


class ArrayCache:
    def __init__(self, kind: str, key: dict, cache_dir: str | Path | None):
        self.key = json.loads(json.dumps(key))  # normalise tuples to lists for comparison
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:20]
        self.slot = cache_root(cache_dir) / kind / digest

    def load(self, manifest: list[list], names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        try:
            stored = json.loads((self.slot / "manifest.json").read_text())
            if stored != {"key": self.key, "files": manifest}:
                return None
            return {name: np.load(self.slot / f"{name}.npy") for name in names}
        except (OSError, ValueError):
            return None  # absent or damaged slot: rebuild it

    def save(self, manifest: list[list], arrays: dict[str, np.ndarray]) -> None:
        try:
            self.slot.mkdir(parents=True, exist_ok=True)
            (self.slot / "manifest.json").unlink(missing_ok=True)
            for name, array in arrays.items():
                tmp = self.slot / f"{name}.tmp{os.getpid()}.npy"
                np.save(tmp, array)
                os.replace(tmp, self.slot / f"{name}.npy")
            tmp = self.slot / f"manifest.tmp{os.getpid()}"
            tmp.write_text(json.dumps({"key": self.key, "files": manifest}))
            os.replace(tmp, self.slot / "manifest.json")
        except OSError as err:
            # the data is already decoded: a cache we cannot write costs time, not correctness
            warnings.warn(
                f"could not write the data cache at {self.slot} ({err}); set the cache_dir option "
                "or SPIKEGUIDE_CACHE to a writable folder to avoid decoding again next time",
                stacklevel=2,
            )
