"""Samplers: which dataset indices each process visits."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data.sampler import Sampler

from ..utils import comm

__all__ = ["InferenceSampler", "TrainingSampler"]


class TrainingSampler(Sampler):
    """An endless stream of indices: random permutations of ``range(size)``, one after another.

    All processes draw the same stream (same ``seed``, shared from rank 0 when None) and
    process ``rank`` keeps positions ``rank, rank + world_size, ...``, so together they see
    each index equally often and no two processes take the same position.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=generator).tolist()
            else:
                yield from range(self._size)


class InferenceSampler(Sampler):
    """Each index of ``range(size)`` exactly once over all processes: process ``rank`` gets a
    contiguous shard; shard lengths differ by at most one."""

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        base, extra = divmod(size, world_size)
        begin = rank * base + min(rank, extra)
        self._indices = range(begin, begin + base + (rank < extra))

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)
