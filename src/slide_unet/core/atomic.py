"""Atomic writes: a file or folder appears complete under its name, or not at all.

Writers produce their output under a temporary name in the destination's
folder (same file system, so the final rename is atomic) and rename it into
place only when everything was written. An error or a cancel removes the
temporary output and leaves any existing file untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from slide_unet.core.errors import InputError

__all__ = [
    "STALE_SECONDS",
    "atomic_path",
    "check_not_overwriting",
    "clean_stale_temporaries",
    "temporary_name",
    "write_bytes_atomic",
    "write_text_atomic",
]

#: A temporary of this program whose process is alive is left alone until it is this old.
STALE_SECONDS = 24 * 3600
#: ``.<name>.tmp-<pid>-<token>``: every temporary this program makes beside an output.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9A-Za-z_]+$")


def temporary_name(name: str) -> str:
    """A hidden temporary name for ``name`` that says which process made it."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(temporary_name(path.name))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, and belongs to someone else
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of this program in ``folder`` that no run will finish.

    A run killed (``kill -9``, a power cut) while it wrote leaves its hidden
    ``.<name>.tmp-<pid>-<token>`` file or folder behind. Those whose process
    is gone, or that are older than :data:`STALE_SECONDS`, are removed; a
    running writer's are left alone.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # a folder that cannot be listed has nothing to clean here
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if not _alive(int(match["pid"])) or age > STALE_SECONDS:
            _remove(entry)
            removed.append(entry)
    return removed


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file or folder (the same path, a hard link,
    the same inode through a symbolic link or another mount path)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_not_overwriting(
    outputs: Iterable[str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str] | None],
) -> None:
    """Refuse to write any of ``outputs`` over any of ``inputs``.

    Parameters
    ----------
    outputs, inputs : iterables of paths
        Paths (None entries are skipped); an input that is a zarr store also
        protects everything inside it (a store written into itself).

    Raises
    ------
    InputError
        An output is an input, the same file by another path or link, or
        inside an input folder.
    """
    ins = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        for source in ins:
            inside = _is_zarr_store(source) and _inside(out, source)
            if _same_file(out, source) or inside:
                raise InputError(
                    f"{out}: that would write over the input {source}: choose another output"
                )


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (OSError, ValueError):
        return False
    return True


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
    clean_stale_temporaries(path.parent)
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
