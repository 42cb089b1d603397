"""Opt-in download of official files (``download=True``), verified by their published md5."""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

from ..errors import SpikeguideError


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest``; a wrong md5 leaves nothing behind and is an error."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as err:  # URLError and HTTPError are OSErrors
        part.unlink(missing_ok=True)
        raise SpikeguideError(
            f"download of {url} to {dest} failed ({err}); check the network and that the folder "
            "is writable, or fetch the file by hand"
        ) from None
    if digest.hexdigest() != md5:
        part.unlink()
        raise SpikeguideError(
            f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; the download "
            "is corrupt or the file changed upstream: retry, or fetch it by hand"
        )
    os.replace(part, dest)
    return dest


def fetch_and_extract(url: str, root: Path, md5: str) -> None:
    """Download a tarball into ``root``, verify it, unpack it there and delete the archive."""
    archive = fetch(url, root / url.rsplit("/", 1)[-1], md5)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # refuses absolute paths and links out of root
    except (tarfile.TarError, OSError) as err:
        raise SpikeguideError(f"cannot unpack {archive} ({err}); delete it and retry") from None
    archive.unlink()
