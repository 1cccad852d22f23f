"""Data loaders for training (endless, sharded, batched) and testing (each image once)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import random
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils import data

from ..config import ConfigError, configurable
from ..utils import comm
from .catalog import DatasetCatalog, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mappers import build_dataset_mapper
from .samplers import InferenceSampler, TrainingSampler

logger = logging.getLogger(__name__)

__all__ = [
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "exit_with_parent",
    "check_num_classes",
    "filter_images_with_only_crowd_annotations",
    "get_detection_dataset_dicts",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]


def _has_non_crowd(annotations: list) -> bool:
    """Whether an image's annotations (or a video's, one list per frame) hold a non-crowd one."""
    return any(
        _has_non_crowd(a) if isinstance(a, list) else a.get("iscrowd", 0) == 0 for a in annotations
    )


def filter_images_with_only_crowd_annotations(dataset_dicts: list[dict]) -> list[dict]:
    """Keep the dicts (images, or videos) with at least one non-crowd annotation."""
    kept = [d for d in dataset_dicts if _has_non_crowd(d["annotations"])]
    logger.info("removed %d images without (non-crowd) annotations", len(dataset_dicts) - len(kept))
    return kept


def _check_same_classes(names: Sequence[str]) -> None:
    """Datasets trained together must agree on their thing classes."""
    first = MetadataCatalog.get(names[0]).get("thing_classes")
    for name in names[1:]:
        other = MetadataCatalog.get(name).get("thing_classes")
        if first is not None and other is not None and list(other) != list(first):
            raise ValueError(f"datasets {names[0]!r} and {name!r} have different thing_classes")


def check_num_classes(
    names: str | Sequence[str], dataset_dicts: list[dict], num_classes: int, key: str
) -> None:
    """Raise :class:`ConfigError` if a dataset has another number of classes than the model.

    A model trained on instance data (dicts with "annotations") predicts the dataset's
    ``thing_classes``; on semantic or panoptic data its ``stuff_classes`` (every class).
    Datasets whose metadata lists no such classes are not checked. ``key`` names the config
    key that lists ``names``, for the message.
    """
    names = [names] if isinstance(names, str) else list(names)
    field = (
        "thing_classes" if dataset_dicts and "annotations" in dataset_dicts[0] else "stuff_classes"
    )
    for name in names:
        classes = MetadataCatalog.get(name).get(field)
        if classes is None or len(classes) == num_classes:
            continue
        shown = ", ".join(list(classes)[:8]) + (", ..." if len(classes) > 8 else "")
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset {name!r} ({key}) has "
            f"{len(classes)} classes ({field}: {shown}): set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
            f"{len(classes)}, or name your dataset in {key}"
        )


def get_detection_dataset_dicts(
    names: str | Sequence[str], filter_empty: bool = True, check_consistency: bool = True
) -> list[dict]:
    """The concatenated dataset dicts of the registered datasets ``names``.

    ``filter_empty`` drops images whose "annotations" are all crowd (or absent), when the
    datasets have "annotations" (instance data; panoptic and semantic dicts are kept).
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("get_detection_dataset_dicts: no dataset names given (DATASETS.TRAIN?)")
    dataset_dicts = []
    for name in names:
        if name not in DatasetCatalog:
            raise KeyError(
                f"dataset {name!r} is not registered: register a dataset folder with "
                f"DATASETS.FOLDERS (or register_folder), other datasets with "
                f"DatasetCatalog.register; registered: {', '.join(DatasetCatalog.list())}"
            )
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise ValueError(f"dataset {name!r} is empty")
        dataset_dicts.extend(dicts)
    if filter_empty and "annotations" in dataset_dicts[0]:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts)
        if not dataset_dicts:
            raise ValueError(f"no images with annotations left in {names}")
    if check_consistency and len(names) > 1:
        _check_same_classes(names)
    return dataset_dicts


def trivial_batch_collator(batch: list) -> list:
    """A batch is the list of mapped dicts as they are."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed python, numpy and torch in a loader worker from torch's per-worker seed.

    Without this, forked workers share numpy's state and draw the same augmentations.
    """
    seed = torch.initial_seed() % 2**31
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent() -> None:
    """Have the kernel SIGKILL this process (a loader worker) as soon as its parent dies.

    Without it a worker outlives a ``kill -9`` of the trainer: torch's own watchdog only
    notices a dead parent between samples, every few seconds, and never while the worker is
    blocked inside the dataset. Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere this does
    nothing. A worker holds nothing of ours that needs a clean exit, hence SIGKILL.

    Linux ties the signal to the *thread* that started the worker: ``DataLoader`` starts its
    workers in the thread that calls ``iter(loader)``, so iterate a loader in a thread that
    outlives the iteration. Under the "forkserver" start method the parent is the fork
    server, which itself exits when the trainer dies.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid and not _pid_exists(parent.pid):
        os.kill(os.getpid(), signal.SIGKILL)  # the parent died before prctl took effect


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


def _train_worker_init(worker_id: int) -> None:
    exit_with_parent()
    worker_init_reset_seed(worker_id)


def _test_worker_init(worker_id: int) -> None:
    exit_with_parent()


def _per_process_batch_size(total_batch_size: int) -> int:
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the "
            f"number of processes ({world_size})"
        )
    return total_batch_size // world_size


def build_batch_data_loader(
    dataset: data.Dataset,
    sampler: data.Sampler,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> Any:
    """Endless batches (lists of dicts) of ``total_batch_size / world_size`` from this process."""
    batch_size = _per_process_batch_size(total_batch_size)
    iterable = ToIterableDataset(dataset, sampler)
    if aspect_ratio_grouping:
        loader = data.DataLoader(
            iterable,
            batch_size=None,
            num_workers=num_workers,
            collate_fn=trivial_batch_collator,
            worker_init_fn=_train_worker_init,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        return grouped if collate_fn is None else map(collate_fn, grouped)
    return data.DataLoader(
        iterable,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn or trivial_batch_collator,
        worker_init_fn=_train_worker_init,
    )


#: Appended to the error of a bad sample (missing or corrupt file) in the training loader.
TRAIN_BAD_SAMPLE_ADVICE = (
    "fix or remove the file, or set DATALOADER.SKIP_BAD_SAMPLES True (skip_bad_samples=True) "
    "to train on with a warning for each bad sample"
)
#: Appended to the error of a bad sample in the test loader, which never skips: a metric
#: over fewer images than the dataset's is not comparable to published numbers.
TEST_BAD_SAMPLE_ADVICE = (
    "evaluation does not skip bad samples (DATALOADER.SKIP_BAD_SAMPLES is for training only: "
    "a metric over fewer images is not comparable); fix or replace the file, or remove the "
    "image from the dataset's annotations to evaluate without it"
)


def _mapped(
    dataset: list | data.Dataset,
    mapper: Callable[[Any], Any],
    skip_bad_samples: bool = False,
    bad_sample_advice: str = "",
) -> MapDataset:
    """``dataset`` (a list of dicts or a Dataset) with ``mapper`` applied to each item."""
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    return MapDataset(
        dataset, mapper, skip_bad_samples=skip_bad_samples, bad_sample_advice=bad_sample_advice
    )


def _default_mapper(
    cfg, mapper: Callable | None, is_train: bool, dataset_names: str | Sequence[str]
) -> Callable:
    """``mapper``, or the training / test mapper of ``dataset_names`` (see
    :func:`~.dataset_mappers.build_dataset_mapper`)."""
    if mapper is not None:
        return mapper
    return build_dataset_mapper(cfg, is_train=is_train, dataset_names=dataset_names)


def _train_loader_from_config(cfg, mapper: Callable | None = None, *, dataset=None, sampler=None):
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        check_num_classes(
            cfg.DATASETS.TRAIN, dataset, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "DATASETS.TRAIN"
        )
    if sampler is None:
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r}; "
                "supported: TrainingSampler"
            )
        sampler = TrainingSampler(len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None)
    return {
        "dataset": dataset,
        "mapper": _default_mapper(cfg, mapper, True, cfg.DATASETS.TRAIN),
        "sampler": sampler,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset: list | data.Dataset,
    *,
    mapper: Callable[[Any], Any],
    sampler: data.Sampler | None = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    skip_bad_samples: bool = False,
) -> Any:
    """An endless iterable of training batches (lists of mapped dicts) for this process.

    ``build_detection_train_loader(cfg, mapper=None)`` reads DATASETS.TRAIN, their mapper
    (INPUT.DATASET_MAPPER_NAME; the video mapper for video datasets), SOLVER.IMS_PER_BATCH
    (over all processes) and DATALOADER.*.
    """
    dataset = _mapped(dataset, mapper, skip_bad_samples, TRAIN_BAD_SAMPLE_ADVICE)
    if sampler is None:
        sampler = TrainingSampler(len(dataset))
    return build_batch_data_loader(
        dataset,
        sampler,
        total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
    )


def _test_loader_from_config(cfg, dataset_name: str | Sequence[str], mapper=None) -> dict:
    dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    check_num_classes(dataset_name, dataset, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "DATASETS.TEST")
    return {
        "dataset": dataset,
        "mapper": _default_mapper(cfg, mapper, False, dataset_name),
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(
    dataset: list | data.Dataset,
    *,
    mapper: Callable[[Any], Any],
    sampler: data.Sampler | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> data.DataLoader:
    """A loader visiting this process's shard of ``dataset`` once, in order, in batches
    (lists of mapped dicts). ``build_detection_test_loader(cfg, dataset_name, mapper=None)``
    uses the dataset's test mapper (``DatasetMapper``, or the video mapper). A bad sample
    (missing or corrupt file) is an error, never skipped: see :data:`TEST_BAD_SAMPLE_ADVICE`."""
    dataset = _mapped(dataset, mapper, bad_sample_advice=TEST_BAD_SAMPLE_ADVICE)
    if sampler is None:
        sampler = InferenceSampler(len(dataset))
    return data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate_fn or trivial_batch_collator,
        worker_init_fn=_test_worker_init,
    )
