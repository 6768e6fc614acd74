"""Atomic file writes: a file is either absent, the old one, or complete, never half-written.

Every writer of a file a user or a later run reads (``-o`` outputs, converted checkpoints, the
trained ``model.safetensors``, eval's ``detections.json`` and ``run.json``, trimmed logs) writes a
temporary file in the target's folder and renames it over the target (POSIX rename is atomic
within a file system). The temporary file is created by :func:`tempfile.mkstemp`, which makes it
mode 0600; the mode is then set to what ``open()`` would have given (0666 less the umask), so the
written file is as readable as any other the user creates.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``.

    For writers that take a file name (``safetensors.numpy.save_file``). The folder is created if
    needed. If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Opens a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Args:
        path: the file to write; its folder is created if needed.
        mode: "w" (text) or "wb" (bytes).
        encoding, newline: as for :func:`open`, text mode only.

    Yields:
        The open file. It is closed, given the umask's mode and renamed over ``path`` when the
        block ends; if the block raises, ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    with atomic_path(path) as tmp:
        with open(tmp, mode, **text) as f:
            yield f


__all__ = ["atomic_path", "atomic_write", "current_umask"]
