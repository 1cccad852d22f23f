"""Logging set-up: console on the main process, a log file per process."""

from __future__ import annotations

import functools
import logging
import os
import sys

from .file_io import PathManager

_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"


def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    *,
    name: str = "mask2former",
    level: int = logging.DEBUG,
) -> logging.Logger:
    """Configure logger ``name``: INFO to stdout on rank 0, DEBUG to a file when ``output``.

    ``output``: a directory (the log goes to ``output/log.txt``) or a ``.txt``/``.log`` file.
    Processes other than rank 0 write ``<file>.rank<r>`` and nothing to the console.
    Each logger is configured once per set of values, whether they are passed by position or
    by keyword (``default_setup`` and a script's own ``setup_logger(output=...)`` call add no
    second handler).
    """
    return _setup_logger(output, int(distributed_rank), name, level)


@functools.lru_cache  # configure each logger once, however often it is called
def _setup_logger(output: str | None, distributed_rank: int, name: str, level: int):
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    formatter = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.INFO)
        console.setFormatter(formatter)
        logger.addHandler(console)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        PathManager.mkdirs(os.path.dirname(filename) or ".")
        file_handler = logging.StreamHandler(_open_log(filename))
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


@functools.cache  # one stream per file even when several loggers share it
def _open_log(filename: str):
    return PathManager.open(filename, "a", buffering=1)  # line-buffered
