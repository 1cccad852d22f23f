"""SLURM: reading a task's place from srun's variables, and launching under them.

The launch tests fake ``srun``: two subprocesses on localhost with the variables srun would
give two tasks on one node (gloo on CPU).
"""

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mask2former.engine.launch import find_free_port, launch, launched_by_slurm
from mask2former.engine.slurm import (
    PORT_BASE,
    PORT_RANGE,
    SlurmTask,
    expand_hostlist,
    expand_tasks_per_node,
    port_from_job_id,
    slurm_task_from_env,
)

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- #
# Compressed lists
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "text, hosts",
    [
        ("localhost", ["localhost"]),
        ("node[01-04,07],gpu5", ["node01", "node02", "node03", "node04", "node07", "gpu5"]),
        ("gpu5,node[7]", ["gpu5", "node7"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),  # the start's padding
        ("r[1-2]-n[1,3]", ["r1-n1", "r1-n3", "r2-n1", "r2-n3"]),  # brackets multiply
        ("a[1-2].cluster,b", ["a1.cluster", "a2.cluster", "b"]),
    ],
)
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize(
    "text, message",
    [
        ("node[01-04", "unclosed"),
        ("node]1[", "unmatched"),
        ("node[4-2]", "descending range 4-2"),
        ("node[a-b]", r"malformed range \[a-b\]"),
        ("node[[1]]", "nested"),
        (" , ", "empty host list"),
    ],
)
def test_expand_hostlist_refuses_malformed_lists_naming_them(text, message):
    with pytest.raises(ValueError, match=message):
        expand_hostlist(text)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("8") == [8]
    with pytest.raises(ValueError, match=r"malformed tasks-per-node list '2\(3\)'"):
        expand_tasks_per_node("2(3)")


# --------------------------------------------------------------------------- #
# A task's place
# --------------------------------------------------------------------------- #
def srun_env(rank: int, **extra: str) -> dict[str, str]:
    """What srun gives task ``rank`` of 8 tasks on 2 nodes (4 per node, block distribution)."""
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": str(rank % 4),
        "SLURM_NODEID": str(rank // 4),
        "SLURM_NODELIST": "gpu[07-08]",
        "SLURM_TASKS_PER_NODE": "4(x2)",
    }
    return {**env, **extra}


def test_slurm_task_from_srun_variables():
    task = slurm_task_from_env(srun_env(6))
    assert task == SlurmTask(
        rank=6,
        world_size=8,
        local_rank=2,
        local_world_size=4,
        node_rank=1,
        num_nodes=2,
        master_addr="gpu07",
        master_port=PORT_BASE + 123456 % PORT_RANGE,
    )
    assert task.dist_url == "tcp://gpu07:13456"


def test_port_is_the_same_for_every_task_of_a_job_and_differs_between_jobs():
    ports = {slurm_task_from_env(srun_env(r)).master_port for r in range(8)}
    assert ports == {port_from_job_id(123456)}
    assert port_from_job_id(123457) != port_from_job_id(123456)
    assert all(PORT_BASE <= port_from_job_id(j) < 32768 for j in (0, 19999, 10**9 + 7))


def test_master_addr_and_port_from_the_environment_take_priority():
    task = slurm_task_from_env(srun_env(0, MASTER_ADDR="10.0.0.1", MASTER_PORT="29500"))
    assert task.dist_url == "tcp://10.0.0.1:29500"


def test_step_node_list_takes_priority_over_the_job_node_list():
    # a step on the allocation's last two nodes: rank 0 runs on the step's first node
    env = srun_env(0, SLURM_STEP_NODELIST="gpu[08-09]", SLURM_NODELIST="gpu[07-09]")
    assert slurm_task_from_env(env).master_addr == "gpu08"


def test_local_world_size_from_each_source():
    uneven = srun_env(5, SLURM_TASKS_PER_NODE="5,3", SLURM_LOCALID="0", SLURM_NODEID="1")
    assert slurm_task_from_env(uneven).local_world_size == 3
    explicit = srun_env(5, SLURM_NTASKS_PER_NODE="4", SLURM_TASKS_PER_NODE="5,3")
    assert slurm_task_from_env(explicit).local_world_size == 4
    derived = {k: v for k, v in srun_env(5).items() if k != "SLURM_TASKS_PER_NODE"}
    assert slurm_task_from_env(derived).local_world_size == 4  # 8 tasks / 2 nodes
    # one host, no local id: derived from the rank
    minimal = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_NODELIST": "localhost"}
    task = slurm_task_from_env({**minimal, "MASTER_PORT": "1234"})
    assert (task.local_rank, task.local_world_size, task.node_rank) == (1, 2, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"SLURM_PROCID": "8"}, r"SLURM_PROCID=8 is not in \[0, SLURM_NTASKS=8\)"),
        ({"SLURM_NTASKS": "eight"}, "SLURM_NTASKS='eight' is not an integer"),
        ({"SLURM_LOCALID": "4"}, r"SLURM_LOCALID=4 is not in \[0, 4\)"),
        ({"SLURM_NODEID": "2"}, "SLURM_NODEID=2 but SLURM_NODELIST has 2 hosts"),
        ({"SLURM_NODEID": None}, "SLURM_NODEID is not set"),
        ({"SLURM_NODELIST": None}, "none of SLURM_STEP_NODELIST, SLURM_NODELIST"),
        ({"SLURM_JOB_ID": None}, "set MASTER_PORT, or SLURM_JOB_ID"),
        ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a TCP port"),
        ({"SLURM_TASKS_PER_NODE": "4"}, "has no entry for SLURM_NODEID=1"),
        ({"SLURM_TASKS_PER_NODE": None, "SLURM_NTASKS": "7", "SLURM_PROCID": "0"}, "7 tasks on 2"),
    ],
)
def test_bad_variables_are_refused_naming_them(change, message):
    env = srun_env(5)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    with pytest.raises(ValueError, match=message):
        slurm_task_from_env(env)


@pytest.mark.parametrize(
    "env, expected",
    [
        (srun_env(3), True),
        # an salloc shell or a one-task job stays single-process
        ({**srun_env(0), "SLURM_NTASKS": "1"}, False),
        ({k: v for k, v in srun_env(0).items() if k != "SLURM_NTASKS"}, False),
        ({k: v for k, v in srun_env(0).items() if k != "SLURM_PROCID"}, False),
        # torchrun takes priority (e.g. srun starting one torchrun per node)
        ({**srun_env(3), "RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, False),
    ],
)
def test_launched_by_slurm(monkeypatch, env, expected):
    for key in list(os.environ):
        if key.startswith("SLURM_") or key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launched_by_slurm() is expected


def test_salloc_shell_runs_main_in_this_process(monkeypatch):
    for key, value in {**srun_env(0), "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    calls = []
    launch(lambda x: calls.append((x, os.getpid())), 1, args=(7,))
    assert calls == [(7, os.getpid())]


@pytest.mark.parametrize(
    "num_gpus, num_machines, machine_rank, message",
    [
        (2, 1, 0, "--num-gpus 2 under srun with 4 tasks on this node"),
        (1, 3, 0, r"--num-machines 3 --machine-rank 0 disagree with SLURM \(2 machines"),
        (1, 2, 3, r"--machine-rank 3 disagree with SLURM \(2 machines, this one 1\)"),
    ],
)
def test_command_line_disagreeing_with_slurm_is_refused(
    monkeypatch, num_gpus, num_machines, machine_rank, message
):
    for key, value in srun_env(5).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        launch(lambda: None, num_gpus, num_machines, machine_rank)


def test_one_task_per_node_spawns_its_gpus_processes_as_one_machine(monkeypatch):
    env = srun_env(1, SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID="1")
    env["SLURM_TASKS_PER_NODE"] = "1(x2)"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spawned = {}

    def start_processes(worker, nprocs, args, **kwargs):
        spawned.update(nprocs=nprocs, args=args)

    launch_module = importlib.import_module("mask2former.engine.launch")
    monkeypatch.setattr(launch_module.mp, "start_processes", start_processes)
    launch(lambda: None, 4)
    world_size, procs_per_machine, machine_rank, dist_url = spawned["args"][1:5]
    assert spawned["nprocs"] == 4
    assert (world_size, procs_per_machine, machine_rank) == (8, 4, 1)
    assert dist_url == "tcp://gpu07:13456"


# --------------------------------------------------------------------------- #
# Two tasks on localhost
# --------------------------------------------------------------------------- #
TINY_MAIN = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from mask2former.engine import launch
    from mask2former.utils import comm

    def main(out):
        value = torch.tensor([float(comm.get_rank() + 1)])
        dist.all_reduce(value)
        result = {
            "rank": comm.get_rank(),
            "world_size": comm.get_world_size(),
            "local": [comm.get_local_rank(), comm.get_local_size()],
            "backend": dist.get_backend(),
            "sum": value.item(),
        }
        with open(f"{out}/{comm.get_rank()}.json", "w") as f:
            json.dump(result, f)

    launch(main, 1, args=(sys.argv[1],))
    """)


def _fake_srun(out_dir, port, ntasks=2, timeout=120):
    procs = []
    for rank in range(ntasks):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
            env.pop(key, None)
        env.update(
            PYTHONPATH=str(REPO),
            CUDA_VISIBLE_DEVICES="",  # gloo on CPU
            SLURM_JOB_ID="42",
            SLURM_STEP_ID="0",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NTASKS=str(ntasks),
            SLURM_NODELIST="localhost",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TINY_MAIN, str(out_dir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], outputs


@pytest.mark.slow
def test_two_srun_tasks_on_localhost_form_one_group(tmp_path):
    codes, outputs = _fake_srun(tmp_path, find_free_port())
    assert codes == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    for rank, result in enumerate(results):
        assert result == {
            "rank": rank,
            "world_size": 2,
            "local": [rank, 2],
            "backend": "gloo",
            "sum": 3.0,  # 1 + 2
        }
