"""Atomic writes: a file or folder appears complete under its name, or not at all.

Writers produce their output under a temporary name in the destination's
folder (same file system, so the final rename is atomic) and rename it into
place only when everything was written. An error or a cancel removes the
temporary output and leaves any existing file untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``.

    Works for files and for folders (zarr stores). A folder that already
    exists at ``path`` is replaced as a whole: it is moved aside, the new one
    renamed in, then the old one removed.

    Examples
    --------
    >>> with atomic_path("mask.ome.tif") as tmp:  # doctest: +SKIP
    ...     tifffile.imwrite(tmp, mask)
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: the output folder does not exist")
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the writer produced nothing")
        if tmp.is_dir() and path.exists():
            old = _temporary_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
