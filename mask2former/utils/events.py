"""Training metrics: an ``EventStorage`` the trainer fills and writers that read it.

Writers: :class:`CommonMetricPrinter` (console, with ETA), :class:`JSONWriter` (one JSON object
per line) and :class:`TensorboardXWriter` (``torch.utils.tensorboard``).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections import defaultdict
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

from .file_io import PathManager

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost ``EventStorage`` in use (``with EventStorage(): ...``)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() called outside a 'with EventStorage(...)' block")
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalar histories keyed by name, stamped with the current iteration."""

    def __init__(self, start_iter: int = 0) -> None:
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest: dict[str, tuple[float, int]] = {}
        self.iter = start_iter

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True) -> None:
        """Record ``value`` for ``name`` at the current iteration.

        ``smoothing_hint`` tells writers whether to report a windowed median (True) or the
        latest value (False).
        """
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)
        previous = self._smoothing_hints.setdefault(name, smoothing_hint)
        if previous != smoothing_hint:
            raise ValueError(f"scalar {name!r} was put with smoothing_hint={previous} before")

    def put_scalars(self, *, smoothing_hint: bool = True, **values: Any) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"no scalar named {name!r} in EventStorage")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        return dict(self._latest)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but smoothed scalars give their median over ``window_size``."""
        result = {}
        for name, (value, it) in self._latest.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(window_size)
            result[name] = (value, it)
        return result

    def step(self) -> None:
        self.iter += 1

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Base of the writers; ``write()`` is called periodically, ``close()`` at the end."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NewValuesWriter(EventWriter):
    """Tracks, per scalar, the last iteration written so each value is written once."""

    def __init__(self, window_size: int) -> None:
        self._window_size = window_size
        self._last_written = -1

    def _new_values(self) -> dict[int, dict[str, float]]:
        """``{iteration: {name: value}}`` for values put since the last write."""
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        latest = get_event_storage().latest_with_smoothing_hint(self._window_size)
        for name, (value, it) in latest.items():
            if it > self._last_written:
                by_iter[it][name] = value
        if by_iter:
            self._last_written = max(by_iter)
        return dict(sorted(by_iter.items()))


class JSONWriter(_NewValuesWriter):
    """Appends ``{"iteration": i, name: value, ...}`` lines to ``json_file``."""

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        super().__init__(window_size)
        self._file = PathManager.open(json_file, "a")

    def write(self) -> None:
        for it, values in self._new_values().items():
            self._file.write(json.dumps({"iteration": it, **values}, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorboardXWriter(_NewValuesWriter):
    """Writes scalars to a TensorBoard event file in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20) -> None:
        super().__init__(window_size)
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)

    def write(self) -> None:
        for it, values in self._new_values().items():
            for name, value in values.items():
                self._writer.add_scalar(name, value, it)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Logs iteration, ETA, losses, timings, LR and peak GPU memory on one line."""

    def __init__(self, max_iter: int, window_size: int = 20) -> None:
        self.logger = logging.getLogger("mask2former.utils.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last: tuple[int, float] | None = None  # (iteration, wall time) of last write

    def _eta(self, storage: EventStorage) -> str:
        remaining = self._max_iter - storage.iter - 1
        if "time" in storage.histories():
            seconds = storage.history("time").median(1000) * remaining
        elif self._last is not None and storage.iter > self._last[0]:
            per_iter = (time.perf_counter() - self._last[1]) / (storage.iter - self._last[0])
            seconds = per_iter * remaining
        else:
            return "N/A"
        self._last = (storage.iter, time.perf_counter())
        return str(datetime.timedelta(seconds=int(seconds)))

    def write(self) -> None:
        storage = get_event_storage()
        if storage.iter == self._max_iter:
            return  # after training: nothing new for this line
        histories = storage.histories()

        def median(name: str) -> str:
            return f"{histories[name].median(self._window_size):.4f}" if name in histories else ""

        losses = "  ".join(
            f"{name}: {h.median(self._window_size):.4g}"
            for name, h in histories.items()
            if "loss" in name
        )
        lr = f"{histories['lr'].latest():.5g}" if "lr" in histories else "N/A"
        memory = ""
        if torch.cuda.is_available():
            memory = f"  max_mem: {torch.cuda.max_memory_allocated() / 1024 / 1024:.0f}M"
        self.logger.info(
            f" eta: {self._eta(storage)}  iter: {storage.iter}  {losses}  "
            f"time: {median('time')}  data_time: {median('data_time')}  lr: {lr}{memory}"
        )
