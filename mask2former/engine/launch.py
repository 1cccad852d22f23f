"""Start ``main_func`` in one or several processes on one or several machines.

``launch`` spawns ``num_gpus_per_machine`` processes on this machine (one per GPU; on a machine
without GPUs the same number of CPU processes), joins the process group given by ``dist_url``
(NCCL on GPUs, gloo on CPU) and calls ``main_func(*args)`` in each. Under ``torchrun`` (the
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` variables are set) it
joins torchrun's group instead of spawning. Under SLURM's ``srun`` (``SLURM_PROCID`` set and
``SLURM_NTASKS > 1``, torchrun absent) it joins the group of the step's tasks (see
:func:`launch`). If one process raises, the others are terminated and ``launch`` raises, so no
process waits forever for a dead peer.
"""

from __future__ import annotations

import dataclasses
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
from .slurm import SlurmTask, slurm_task_from_env, started_by_srun

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
__all__ = [
    "DEFAULT_TIMEOUT",
    "find_free_port",
    "launch",
    "launched_by_slurm",
    "launched_by_torchrun",
]


def find_free_port() -> int:
    """A TCP port that is free on this machine now (for single-machine runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def launched_by_slurm() -> bool:
    """``srun`` started this process as one of several tasks, and torchrun did not (torchrun
    takes priority, e.g. one torchrun per node started by ``srun``). An ``salloc`` shell or a
    one-task job (``SLURM_NTASKS=1``) is not: it stays single-process."""
    return not launched_by_torchrun() and started_by_srun(os.environ)


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

    Under torchrun the arguments but ``timeout`` are not used. Under ``srun``
    (:func:`launched_by_slurm`) rank, world size and machine come from SLURM (see
    :func:`~mask2former.engine.slurm.slurm_task_from_env`), and ``dist_url``, unless "auto",
    replaces the rendezvous derived from the node list. ``num_gpus_per_machine`` 1 (the
    default): every task is one process (``srun --ntasks-per-node=GPUS``). N > 1: every task
    spawns N processes, which needs one task per node (``srun --ntasks-per-node=1``).
    ``num_machines`` and ``machine_rank``, unless left at 1 and 0, must agree with SLURM's.
    """
    if launched_by_torchrun():
        _run_under_torchrun(main_func, args, timeout)
        return
    if launched_by_slurm():
        task = _slurm_task(num_gpus_per_machine, num_machines, machine_rank, dist_url)
        if num_gpus_per_machine == 1:
            _run_under_slurm(main_func, task, args, timeout)
            return
        # one task per node, each spawning its GPUs' processes: the multi-machine launch
        num_machines, machine_rank, dist_url = task.world_size, task.rank, task.dist_url
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


def _slurm_task(
    num_gpus_per_machine: int, num_machines: int, machine_rank: int, dist_url: str | None
) -> SlurmTask:
    """This task's place from SLURM's variables, checked against the command line."""
    task = slurm_task_from_env(os.environ)
    if dist_url not in (None, "auto"):
        host, _, port = dist_url.removeprefix("tcp://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--dist-url {dist_url!r} is not tcp://HOST:PORT")
        task = dataclasses.replace(task, master_addr=host, master_port=int(port))
    if num_gpus_per_machine > 1 and task.local_world_size != 1:
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} under srun with {task.local_world_size} tasks on "
            "this node: either one task per GPU (srun --ntasks-per-node=GPUS, --num-gpus 1) or "
            "one task per node that spawns the GPUs' processes (srun --ntasks-per-node=1)"
        )
    # under one task per node, a node is a machine; otherwise srun's nodes are
    machines = task.world_size if num_gpus_per_machine > 1 else task.num_nodes
    rank = task.rank if num_gpus_per_machine > 1 else task.node_rank
    if num_machines not in (1, machines) or machine_rank not in (0, rank):
        raise ValueError(
            f"--num-machines {num_machines} --machine-rank {machine_rank} disagree with SLURM "
            f"({machines} machines, this one {rank}); leave them out under srun"
        )
    _log_slurm_task(task)
    return task


def _log_slurm_task(task: SlurmTask) -> None:
    if "SLURM_STEP_ID" not in os.environ:
        logger.warning(
            "SLURM_NTASKS=%d but SLURM_STEP_ID is not set: a process not started by srun (a "
            "batch script or an salloc shell is one process) waits for %d peers that never come; "
            "start it with srun",
            task.world_size,
            task.world_size - 1,
        )
    logger.info(
        "Started by srun: rank %d of %d, local rank %d of %d on node %d of %d, rendezvous %s",
        task.rank,
        task.world_size,
        task.local_rank,
        task.local_world_size,
        task.node_rank,
        task.num_nodes,
        task.dist_url,
    )


def _slurm_device(local_rank: int) -> int:
    """The GPU of this task: its local rank among the node's visible GPUs, or the only one
    visible (``srun --gpus-per-task=1`` gives every task its own ``CUDA_VISIBLE_DEVICES``)."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    if local_rank >= count:
        raise ValueError(
            f"SLURM_LOCALID={local_rank} but only {count} GPUs are visible on this node: "
            "request one GPU per task"
        )
    return local_rank


def _run_under_slurm(
    main_func: Callable[..., Any], task: SlurmTask, args: Sequence[Any], timeout
) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(_slurm_device(task.local_rank))
    try:
        _init_group(_backend(), task.dist_url, task.world_size, task.rank, timeout)
    except Exception as e:
        raise RuntimeError(
            f"Process group initialisation failed at {task.dist_url} (rank {task.rank} of "
            f"{task.world_size} from SLURM_PROCID / SLURM_NTASKS): {e}"
        ) from e
    _create_node_groups(task.node_rank)
    comm.synchronize()
    main_func(*args)
    _shutdown()


def _create_node_groups(node_rank: int) -> None:
    """One group per node of the ranks on it, whatever srun's task distribution (block,
    cyclic, uneven counts); every process takes part in creating each, keeps its own."""
    node_of_rank = comm.all_gather(node_rank)
    for node in sorted(set(node_of_rank)):
        group = dist.new_group([r for r, n in enumerate(node_of_rank) if n == node])
        if node == node_rank:
            comm.set_local_process_group(group)


def _shutdown() -> None:
    """Leave the process group after success; after an error the process just exits (a
    collective teardown could wait for the peers that the error left behind)."""
    comm.destroy_process_group()
