"""Datasets generated on first use (``shapes``, ``ytvis_shapes``): write once, safely.

A generated dataset lives in ``<root>/<dirname>`` with a ``VERSION`` file written last. It is
generated in a temporary directory renamed into place, so several processes may start at
once: the first rename wins and the others use its result.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Callable

logger = logging.getLogger(__name__)

__all__ = ["ensure_generated", "write_version"]


def write_version(out_dir: str, version: str) -> None:
    """Mark ``out_dir`` complete: call after everything else is written."""
    with open(os.path.join(out_dir, "VERSION"), "w") as f:
        f.write(version + "\n")


def _is_complete(path: str, version: str) -> bool:
    marker = os.path.join(path, "VERSION")
    if not os.path.isfile(marker):
        return False
    with open(marker) as f:
        return f.read().strip() == version


def _move_aside_if_stale(final: str, version: str) -> None:
    """Rename an incomplete or outdated ``final`` out of the way (readers keep their files)."""
    if not os.path.isdir(final) or _is_complete(final, version):
        return
    stale = f"{final}.stale-{os.getpid()}-{int(time.time())}"
    try:
        os.rename(final, stale)
    except FileNotFoundError:  # another process moved it first
        return
    logger.warning("Moved an incomplete or outdated %s to %s", final, stale)


def ensure_generated(root: str, dirname: str, version: str, generate: Callable[[str], None]) -> str:
    """Return ``<root>/<dirname>``, first calling ``generate(new_dir)`` unless a complete copy
    of ``version`` is there. ``generate`` writes into the directory it is given (which does
    not exist yet) and ends with :func:`write_version`.

    Safe under concurrency: each process generates into its own temporary directory and
    renames it into place; a process that loses the race discards its copy. A stale or
    incomplete directory (other or missing VERSION) is moved aside, then replaced.
    """
    final = os.path.join(root, dirname)
    if _is_complete(final, version):
        return final
    os.makedirs(root, exist_ok=True)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f".{dirname}-tmp-", dir=root)
    try:
        generate(os.path.join(tmp, dirname))
        _move_aside_if_stale(final, version)
        try:
            os.rename(os.path.join(tmp, dirname), final)
            logger.info(
                "Generated the %s dataset in %s (%.1f s)",
                dirname,
                final,
                time.perf_counter() - start,
            )
        except OSError:
            if not _is_complete(final, version):  # the rename failed for another reason
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
