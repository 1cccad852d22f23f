"""Helpers for multi-process (torch.distributed) runs; each works with one process too."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

# Set by the launcher: the process group of the processes on this machine.
_LOCAL_PROCESS_GROUP = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine."""
    if not is_distributed() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    if not is_distributed() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def set_local_process_group(group: Any) -> None:
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = group


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op with one process)."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """The group to gather Python objects over: the default group (``None``), or with NCCL,
    which cannot gather them, a gloo group over the same ranks, made once.

    Returning ``None`` rather than ``dist.group.WORLD`` matters: a cached reference would keep
    the default group, and its gloo threads, alive after ``destroy_process_group`` until the
    interpreter's exit, which then aborts ("terminate called without an active exception").
    """
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return None


def destroy_process_group() -> None:
    """Leave torch.distributed, first dropping this module's references to its groups so that
    their threads end with them (see ``_cpu_group``)."""
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = None
    _cpu_group.cache_clear()
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every process; returns one per rank."""
    if get_world_size() == 1:
        return [data]
    output: list[Any] = [None] * get_world_size()
    dist.all_gather_object(output, data, group=_cpu_group())
    return output


def gather(data: Any, dst: int = 0) -> list[Any]:
    """Gather a picklable object to rank ``dst``; other ranks get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        output: list[Any] = [None] * get_world_size()
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (a new tensor; the input is untouched)."""
    if get_world_size() == 1:
        return tensor.clone()
    result = tensor.clone()
    dist.all_reduce(result)
    return result / get_world_size()


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Reduce scalar tensors to rank 0 (summed or averaged); other ranks get their input."""
    world_size = get_world_size()
    if world_size < 2:
        return values
    with torch.no_grad():
        names = sorted(values)
        stacked = torch.stack([values[k] for k in names])
        dist.reduce(stacked, dst=0)
        if get_rank() == 0 and average:
            stacked /= world_size
        return dict(zip(names, stacked))


def shared_random_seed() -> int:
    """A random int drawn on rank 0 and shared with every process."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]
