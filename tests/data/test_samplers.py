"""Sampler sharding: inference covers every index once; training shards differ per rank."""

import itertools
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mask2former.data import InferenceSampler, TrainingSampler


@pytest.mark.parametrize("size", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_inference_sampler_visits_each_index_once(size, world_size):
    shards = [
        list(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ]
    assert sorted(itertools.chain(*shards)) == list(range(size))
    lengths = [len(s) for s in shards]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == [
        len(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ]


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_training_sampler_two_ranks_split_one_stream():
    size, n = 10, 30
    whole = take(TrainingSampler(size, seed=5, rank=0, world_size=1), 2 * n)
    rank0 = take(TrainingSampler(size, seed=5, rank=0, world_size=2), n)
    rank1 = take(TrainingSampler(size, seed=5, rank=1, world_size=2), n)
    assert rank0 == whole[0::2] and rank1 == whole[1::2]
    assert rank0 != rank1
    # each epoch of the stream is a permutation: both ranks together see every index
    for epoch in range(6):
        assert sorted(whole[epoch * size : (epoch + 1) * size]) == list(range(size))


def test_training_sampler_is_deterministic_given_the_seed_and_differs_otherwise():
    a = take(TrainingSampler(50, seed=1, rank=0, world_size=1), 200)
    assert a == take(TrainingSampler(50, seed=1, rank=0, world_size=1), 200)
    assert a != take(TrainingSampler(50, seed=2, rank=0, world_size=1), 200)
    assert take(TrainingSampler(5, shuffle=False, seed=0, rank=0, world_size=1), 7) == [
        0,
        1,
        2,
        3,
        4,
        0,
        1,
    ]
    with pytest.raises(ValueError, match="size=0"):
        TrainingSampler(0, seed=0)


def _worker(rank: int, world_size: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        training = take(TrainingSampler(12), 12)  # seed=None: shared from rank 0
        queue.put((rank, training, list(InferenceSampler(11))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_samplers_under_torch_distributed():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in processes:
        p.start()
    results = {
        rank: (train, infer) for rank, train, infer in (queue.get(timeout=120) for _ in processes)
    }
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    train0, infer0 = results[0]
    train1, infer1 = results[1]
    assert sorted(infer0 + infer1) == list(range(11))
    # same shared seed: positions 0, 2, 4, ... and 1, 3, 5, ... of one stream of permutations
    merged = [x for pair in zip(train0, train1) for x in pair]
    assert sorted(merged[:12]) == list(range(12)) and train0 != train1
