"""Write files so that nothing is lost: atomically, and never over an existing file.

A crash or Ctrl-C mid-write leaves only a hidden temp file, never a truncated
output; an existing file (an input, or an earlier result) is never replaced.
``os.link`` gives the no-overwrite guarantee atomically on POSIX file systems;
where hard links are not supported we fall back to an exists-check + rename.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from medcf.errors import OutputError


def write_new_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Create ``path`` by calling ``write(tmp_path)`` then publishing it atomically.

    Raises :class:`OutputError` if ``path`` already exists; the temp file is
    removed whatever happens.
    """
    path = Path(path)
    if path.exists():
        raise OutputError(f"refusing to overwrite existing file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates 0600; outputs get the permissions any new file would get.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError(f"refusing to overwrite existing file {path}") from None
        except OSError:
            if path.exists():
                raise OutputError(f"refusing to overwrite existing file {path}") from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def new_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` for a command's outputs; it must be new or empty (MedCF never
    mixes its outputs into a folder that holds other files)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"{out_dir} exists and is not empty: choose a new folder (MedCF never overwrites)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_new_dataset(path: Path, ds) -> Path:
    """Save a pydicom Dataset as a new DICOM file (Part 10, with preamble and meta)."""
    return write_new_file(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def write_new_text(path: Path, text: str) -> Path:
    return write_new_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_own_text(path: Path, text: str, private: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically, replacing the file if it is there: for a record
    the running command itself created and keeps up to date (a pseudonym table, a benchmark's
    results after each seed), so a stop leaves the last whole version, never half of one.
    Never call it on an input or another command's output. ``private``: keep the temp
    file's owner-only mode (a table that identifies patients)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def sha256_of_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
