"""Dataset wrappers used by the loaders: list storage, mapping, aspect-ratio batching."""

from __future__ import annotations

import itertools
import logging
import pickle
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils import data

from .detection_utils import BadSampleError

logger = logging.getLogger(__name__)

__all__ = ["AspectRatioGroupedDataset", "DatasetFromList", "MapDataset", "ToIterableDataset"]


class DatasetFromList(data.Dataset):
    """A list as a dataset. With ``serialize`` the items are pickled into one numpy buffer,
    so forked loader workers share it instead of copying Python objects on access."""

    def __init__(self, items: list, copy: bool = True, serialize: bool = True):
        self._copy = copy
        self._serialize = serialize
        if serialize:
            blobs = [
                np.frombuffer(pickle.dumps(item, protocol=-1), dtype=np.uint8) for item in items
            ]
            self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
            self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
        else:
            self._items = items

    def __len__(self) -> int:
        return len(self._ends) if self._serialize else len(self._items)

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else int(self._ends[idx - 1])
            return pickle.loads(self._buffer[start : int(self._ends[idx])].tobytes())
        item = self._items[idx]
        return pickle.loads(pickle.dumps(item, protocol=-1)) if self._copy else item


def _file_name(item: Any) -> str:
    """The file of an image dict, the first frame of a video dict."""
    if not isinstance(item, dict):
        return repr(item)[:200]
    if "file_name" not in item and item.get("file_names"):
        return f"{item['file_names'][0]} (first frame of {len(item['file_names'])})"
    return item.get("file_name", "<no file_name>")


def _add_advice(error: BadSampleError, advice: str) -> None:
    """Append ``advice`` (what the user can do about it) to ``error``'s message, in place, so
    that it is raised again with its own traceback."""
    if error.problem:
        error.problem = f"{error.problem}; {advice}"
    error.args = (f"{error.args[0]}; {advice}",)


class MapDataset(data.Dataset):
    """``map_func(dataset[i])``. A failure names the sample's file.

    With ``skip_bad_samples``, a :class:`BadSampleError` is logged as a warning naming the
    file, counted in ``num_skipped``, and a random other sample is mapped instead (up to
    ``max_consecutive_skips`` in a row, then the error is raised). Without it, the error is
    raised with ``bad_sample_advice`` appended: what the user can do (the loaders name the
    option that skips bad samples, or say why evaluation does not skip).
    """

    def __init__(
        self,
        dataset: Sequence,
        map_func: Callable[[Any], Any],
        *,
        skip_bad_samples: bool = False,
        max_consecutive_skips: int = 100,
        bad_sample_advice: str = "",
    ):
        self._dataset = dataset
        self._map_func = map_func
        self._skip_bad_samples = skip_bad_samples
        self._max_consecutive_skips = max_consecutive_skips
        self._bad_sample_advice = bad_sample_advice
        self._rng = random.Random(42)
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        for attempt in itertools.count():
            item = self._dataset[idx]
            try:
                return self._map_func(item)
            except BadSampleError as e:
                if not self._skip_bad_samples:
                    if self._bad_sample_advice:
                        _add_advice(e, self._bad_sample_advice)
                    raise
                if attempt >= self._max_consecutive_skips:
                    _add_advice(e, f"the {attempt} samples tried before it were bad too; giving up")
                    raise
                self.num_skipped += 1
                logger.warning(
                    "skipping bad sample %s (%s); %d skipped so far in this process",
                    e.file_name,
                    e.problem,
                    self.num_skipped,
                )
            except Exception as e:
                raise RuntimeError(f"mapping sample {idx} ({_file_name(item)}) failed: {e}") from e
            idx = self._rng.randrange(len(self._dataset))
        raise AssertionError("itertools.count() ended")  # keeps type checkers content


class ToIterableDataset(data.IterableDataset):
    """Iterate ``dataset[i]`` for the indices of ``sampler``; each loader worker takes every
    ``num_workers``-th index, so workers of one process never repeat each other's work."""

    def __init__(self, dataset: Sequence, sampler: Iterable[int]):
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        worker = data.get_worker_info()
        indices = iter(self.sampler)
        if worker is not None and worker.num_workers > 1:
            indices = itertools.islice(indices, worker.id, None, worker.num_workers)
        for idx in indices:
            yield self.dataset[idx]


class AspectRatioGroupedDataset(data.IterableDataset):
    """Batches of ``batch_size`` samples that are all landscape (w >= h) or all portrait.

    Takes an iterable of mapped dicts (with "width" and "height"); yields lists of dicts. A
    video's mapped dict (a list of frames in "image") goes by its first frame.
    """

    def __init__(self, dataset: Iterable[dict], batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[dict]]:
        buckets: list[list[dict]] = [[], []]
        for item in self.dataset:
            image = item.get("image")
            if isinstance(image, list):
                image = image[0] if image else None
            h, w = image.shape[-2:] if image is not None else (item["height"], item["width"])
            bucket = buckets[0 if w >= h else 1]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]
