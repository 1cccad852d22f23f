"""Where this process stands in a SLURM job step, read from the variables ``srun`` sets.

``srun`` starts one process per task and tells each its place through environment variables;
:func:`slurm_task_from_env` reads them into a :class:`SlurmTask` (rank, world size, local rank,
tasks on this node, node rank, rendezvous address). Nothing here calls SLURM's commands
(``scontrol`` is often absent inside a job): compressed host lists such as
``node[01-04,07],gpu5`` are expanded by :func:`expand_hostlist`, and per-node task counts such
as ``2(x3),1`` by :func:`expand_tasks_per_node`.

The rendezvous is ``MASTER_ADDR`` if set, else the first host of the step's node list
(``SLURM_STEP_NODELIST``, else ``SLURM_NODELIST``, else ``SLURM_JOB_NODELIST``); the port is
``MASTER_PORT`` if set, else :func:`port_from_job_id` of ``SLURM_JOB_ID`` (every task of the
job derives the same one).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "SlurmTask",
    "expand_hostlist",
    "expand_tasks_per_node",
    "port_from_job_id",
    "slurm_task_from_env",
    "started_by_srun",
]

#: Ports derived from job ids lie in [PORT_BASE, PORT_BASE + PORT_RANGE): below Linux's
#: ephemeral range (32768-60999), so a port the kernel handed to another connection is unlikely.
PORT_BASE = 10000
PORT_RANGE = 20000

_NODELIST_VARS = ("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST")
_TASKS_PER_NODE_VARS = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")


@dataclass(frozen=True)
class SlurmTask:
    """This task's place in the job step.

    ``rank`` / ``world_size``: ``SLURM_PROCID`` / ``SLURM_NTASKS``; ``local_rank``:
    ``SLURM_LOCALID``; ``local_world_size``: tasks on this node; ``node_rank``:
    ``SLURM_NODEID``; ``num_nodes``: hosts in the step's node list; ``master_addr`` /
    ``master_port``: the rendezvous (see the module docstring).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int

    @property
    def dist_url(self) -> str:
        return f"tcp://{self.master_addr}:{self.master_port}"


def started_by_srun(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is that of one of several tasks of a SLURM step: ``SLURM_PROCID`` is set
    and ``SLURM_NTASKS > 1``. An ``salloc`` shell or a one-task job (``SLURM_NTASKS=1``) is not:
    it stays a single process."""
    return "SLURM_PROCID" in env and _int(env, "SLURM_NTASKS", default=1) > 1


def slurm_task_from_env(env: Mapping[str, str]) -> SlurmTask:
    """Read this task's :class:`SlurmTask` from ``env`` (``os.environ``).

    Raises ``ValueError`` naming the variable when one is missing or malformed, or when the
    values contradict each other (a rank outside the world, a local rank outside the node).
    """
    rank, world_size = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
    if not 0 <= rank < world_size:
        raise ValueError(f"SLURM_PROCID={rank} is not in [0, SLURM_NTASKS={world_size})")
    nodes_var, hosts = _hosts(env)
    node_rank = _int(env, "SLURM_NODEID", default=0 if len(hosts) == 1 else None)
    if not 0 <= node_rank < len(hosts):
        raise ValueError(f"SLURM_NODEID={node_rank} but {nodes_var} has {len(hosts)} hosts")
    local_world_size = _local_world_size(env, node_rank, world_size, len(hosts))
    local_rank = _int(env, "SLURM_LOCALID", default=rank % local_world_size)
    if not 0 <= local_rank < local_world_size:
        raise ValueError(
            f"SLURM_LOCALID={local_rank} is not in [0, {local_world_size}) (tasks on this node)"
        )
    return SlurmTask(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        node_rank=node_rank,
        num_nodes=len(hosts),
        master_addr=env.get("MASTER_ADDR") or hosts[0],
        master_port=_master_port(env),
    )


def port_from_job_id(job_id: int) -> int:
    """The rendezvous port every task of job ``job_id`` derives alike:
    ``PORT_BASE + job_id % PORT_RANGE`` (10000 + id mod 20000)."""
    return PORT_BASE + job_id % PORT_RANGE


def _master_port(env: Mapping[str, str]) -> int:
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
        if not 0 < port < 65536:
            raise ValueError(f"MASTER_PORT={port} is not a TCP port")
        return port
    if "SLURM_JOB_ID" not in env:
        raise ValueError("set MASTER_PORT, or SLURM_JOB_ID to derive the rendezvous port from")
    return port_from_job_id(_int(env, "SLURM_JOB_ID"))


def _hosts(env: Mapping[str, str]) -> tuple[str, list[str]]:
    for name in _NODELIST_VARS:
        if env.get(name):
            return name, expand_hostlist(env[name])
    raise ValueError(f"none of {', '.join(_NODELIST_VARS)} is set: no host for the rendezvous")


def _local_world_size(env: Mapping[str, str], node_rank: int, world_size: int, nodes: int) -> int:
    """Tasks on this node: ``SLURM_NTASKS_PER_NODE``, else this node's entry of
    ``SLURM_(STEP_)TASKS_PER_NODE``, else ``world_size / nodes`` when that divides evenly."""
    if env.get("SLURM_NTASKS_PER_NODE"):
        return _int(env, "SLURM_NTASKS_PER_NODE")
    for name in _TASKS_PER_NODE_VARS:
        if env.get(name):
            counts = expand_tasks_per_node(env[name])
            if node_rank >= len(counts):
                raise ValueError(f"{name}={env[name]!r} has no entry for SLURM_NODEID={node_rank}")
            return counts[node_rank]
    if world_size % nodes != 0:
        raise ValueError(
            f"SLURM_NTASKS={world_size} tasks on {nodes} nodes: set SLURM_NTASKS_PER_NODE "
            "(srun --ntasks-per-node) to say how many run on each"
        )
    return world_size // nodes


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"environment variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


# --------------------------------------------------------------------------- #
# Compressed lists
# --------------------------------------------------------------------------- #
_TASK_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def expand_tasks_per_node(text: str) -> list[int]:
    """``"2(x3),1"`` -> ``[2, 2, 2, 1]``: SLURM's tasks per node, a count with an optional
    repeat ``(xN)`` per comma-separated item."""
    counts: list[int] = []
    for item in text.split(","):
        match = _TASK_COUNT.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"malformed tasks-per-node list {text!r} at {item!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def expand_hostlist(text: str) -> list[str]:
    """Expand a SLURM host list: ``"node[01-03,07],gpu5"`` -> ``node01, node02, node03,
    node07, gpu5``.

    Items are separated by commas outside brackets; an item is text with bracketed ranges
    (``a-b`` or single numbers, comma-separated), each bracket expanding to its numbers with the
    zero padding of the range's start (``[08-10]`` -> ``08 09 10``). Several brackets in one
    item multiply (``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1 r2n2``).
    """
    hosts: list[str] = []
    for item in _split_top_level(text):
        hosts += _expand_item(item, text)
    if not hosts:
        raise ValueError(f"empty host list {text!r}")
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in host list {text!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unmatched ']' in host list {text!r}")
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unclosed '[' in host list {text!r}")
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_item(item: str, text: str) -> list[str]:
    # "rack[1-2]-n[1,3]" -> literal parts ["rack", "-n", ""] and bracket bodies ["1-2", "1,3"]
    parts = re.split(r"\[([^\]]*)\]", item)
    literals, ranges = parts[0::2], parts[1::2]
    choices = [_expand_range(body, text) for body in ranges]
    hosts = []
    for numbers in itertools.product(*choices):
        pieces = [literals[0]]
        for number, literal in zip(numbers, literals[1:]):
            pieces += [number, literal]
        hosts.append("".join(pieces))
    return hosts


def _expand_range(body: str, text: str) -> list[str]:
    numbers: list[str] = []
    for part in body.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if match is None:
            raise ValueError(f"malformed range [{body}] in host list {text!r}")
        low, high = match[1], match[2] or match[1]
        if int(high) < int(low):
            raise ValueError(f"descending range {low}-{high} in host list {text!r}")
        numbers += [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]
    return numbers
