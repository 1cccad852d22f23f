"""Writing files whole: :func:`atomic_write` and :func:`save_json` for every writer here."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write", "save_json"]


@contextlib.contextmanager
def atomic_write(filename: str, mode: str = "wb") -> Iterator[IO]:
    """Write ``filename`` whole or not at all.

    Yields a file opened in ``mode`` ("wb" or "w") on a new temporary file in the same
    directory, named ``.<basename>.<random>.tmp`` so that concurrent writers never share one.
    When the block ends normally the file is flushed, fsynced and renamed over ``filename``
    (``os.replace``, atomic on one file system); on an exception it is removed and
    ``filename`` is left as it was. The directory must exist.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(filename)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_json(data: Any, filename: str) -> None:
    """Write ``data`` as JSON to ``filename`` with :func:`atomic_write`, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    with atomic_write(filename, "w") as f:
        json.dump(data, f)
