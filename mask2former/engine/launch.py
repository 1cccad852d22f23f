"""Start ``main_func`` in one or several processes on one or several machines.

``launch`` spawns ``num_gpus_per_machine`` processes on this machine (one per GPU; on a machine
without GPUs the same number of CPU processes), joins the process group given by ``dist_url``
(NCCL on GPUs, gloo on CPU) and calls ``main_func(*args)`` in each. Under ``torchrun`` (the
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` variables are set) it
joins torchrun's group instead of spawning. If one process raises, the others are terminated and
``launch`` raises, so no process waits forever for a dead peer.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
__all__ = ["DEFAULT_TIMEOUT", "find_free_port", "launch", "launched_by_torchrun"]


def find_free_port() -> int:
    """A TCP port that is free on this machine now (for single-machine runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    ``dist_url``: ``tcp://HOST:PORT`` of machine 0 (every machine passes the same one), or
    ``"auto"`` / ``None`` for a free local port when ``num_machines == 1``. ``timeout`` bounds how
    long a collective waits for a silent peer.
    """
    if launched_by_torchrun():
        _run_under_torchrun(main_func, args, timeout)
        return
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus ({num_gpus_per_machine}) and --num-machines ({num_machines}) must be >= 1"
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} not in [0, {num_machines})")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    dist_url = _resolve_dist_url(dist_url, num_machines)
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs visible"
        )
    # spawn's join terminates the remaining processes as soon as one exits with an error
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _resolve_dist_url(dist_url: str | None, num_machines: int) -> str:
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://HOST:PORT")
        return f"tcp://127.0.0.1:{find_free_port()}"
    return dist_url


def _init_group(backend: str, init_method: str, world_size: int, rank: int, timeout) -> None:
    dist.init_process_group(
        backend=backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout
    )


def _create_local_group(num_machines: int, procs_per_machine: int) -> None:
    """Every process takes part in creating one group per machine; keeps its own."""
    machine = dist.get_rank() // procs_per_machine
    for m in range(num_machines):
        ranks = list(range(m * procs_per_machine, (m + 1) * procs_per_machine))
        group = dist.new_group(ranks)
        if m == machine:
            comm.set_local_process_group(group)


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    procs_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta,
) -> None:
    global_rank = machine_rank * procs_per_machine + local_rank
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    try:
        _init_group(_backend(), dist_url, world_size, global_rank, timeout)
    except Exception as e:
        raise RuntimeError(f"Process group initialisation failed at {dist_url}: {e}") from e
    _create_local_group(world_size // procs_per_machine, procs_per_machine)
    comm.synchronize()
    main_func(*args)
    _shutdown()


def _run_under_torchrun(main_func: Callable[..., Any], args: Sequence[Any], timeout) -> None:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    _init_group(_backend(), "env://", world_size, rank, timeout)
    _create_local_group(world_size // local_size, local_size)
    comm.synchronize()
    main_func(*args)
    _shutdown()


def _shutdown() -> None:
    """Leave the process group after success; after an error the process just exits (a
    collective teardown could wait for the peers that the error left behind)."""
    comm.destroy_process_group()
