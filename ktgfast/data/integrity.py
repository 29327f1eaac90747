"""File integrity (md5) and archive download for file-backed datasets."""
from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


class IntegrityError(RuntimeError):
    """A dataset file is corrupt, incomplete or unreadable."""


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: Path, expected: str, fix: str) -> None:
    """Raise ``IntegrityError`` naming the file, both digests and ``fix``."""
    actual = md5sum(path)
    if actual != expected:
        raise IntegrityError(f"{path}: md5 {actual} does not match the expected {expected} "
                             f"(corrupt or incomplete file). {fix}")


def fetch(url: str, dest: Path, md5: str | None) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right md5 is there.

    The data go to ``dest.part`` first and are renamed only after the md5
    check, so an interrupted or corrupt download never looks complete.
    """
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.warning("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        if md5 is not None:
            verify_md5(part, md5, f"The download from {url} is damaged; try again.")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return dest


def extract(archive: Path, into: Path) -> None:
    """Unpack a tar archive; members may not escape ``into``."""
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(into, filter="data")
            return
        root = into.resolve()
        for m in tar.getmembers():
            target = (root / m.name).resolve()
            if root not in target.parents and target != root or m.issym() or m.islnk():
                raise IntegrityError(f"{archive}: refusing to extract unsafe member {m.name!r}")
        tar.extractall(into)
