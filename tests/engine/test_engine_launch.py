"""Multi-process and multi-machine runs (gloo on CPU) of the toy trainer in engine_toy.py.

Tolerance for "same parameters": 1e-5 absolute. Data parallelism changes only the order of
floating-point reductions (gradients averaged over 2 processes, batch-norm statistics
all-reduced), so the results agree to float32 rounding, far below 1e-5 after 8 steps.
"""

import subprocess
import sys
import time

import pytest
import torch

from mask2former.engine.launch import find_free_port
from tests.engine.test_engine_training import REPO, TOY_SCRIPT, _env, _final_params, _run_toy

pytestmark = pytest.mark.slow
ATOL = 1e-5
NO_DROPOUT = {"TOY_DROPOUT": 0}  # dropout masks differ per process by design


@pytest.fixture(scope="module")
def single_process_params(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = _run_toy(out, **NO_DROPOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return _final_params(out), torch.load(out / "results_1.pth", weights_only=False)


def _assert_same_params(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        if name.endswith("num_batches_tracked"):
            assert int(actual[name]) == int(expected[name])
            continue
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=ATOL, msg=name)


def test_two_processes_match_one_process(tmp_path, single_process_params):
    result = _run_toy(tmp_path, "--num-gpus", "2", **NO_DROPOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_params(_final_params(tmp_path), single_process_params[0])
    # default_setup wrote the run's config, environment and library versions (rank 0 only)
    assert "EngineToyModel" in (tmp_path / "config.yaml").read_text()
    env = (tmp_path / "env.txt").read_text()
    assert torch.__version__ in env and "fvcore" in env
    assert (tmp_path / "log.txt").exists() and (tmp_path / "log.txt.rank1").exists()


def _machines(tmp_path, port, timeout=120, **env):
    procs = [
        subprocess.Popen(
            [sys.executable, str(TOY_SCRIPT), "--num-gpus", "1", "--num-machines", "2"]
            + ["--machine-rank", str(rank), "--dist-url", f"tcp://127.0.0.1:{port}"],
            env=_env(tmp_path, **NO_DROPOUT, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    start = time.monotonic()
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], outputs, time.monotonic() - start


def test_two_machines_train_and_evaluate(tmp_path, single_process_params):
    codes, outputs, _ = _machines(tmp_path, find_free_port())
    assert codes == [0, 0], [err[-2000:] for _, err in outputs]
    _assert_same_params(_final_params(tmp_path), single_process_params[0])
    results = torch.load(tmp_path / "results_2.pth", weights_only=False)
    # each machine evaluated half of the samples; the gathered metric covers all of them
    assert results["toy"]["count"] == single_process_params[1]["toy"]["count"]
    assert results["toy"]["mse"] == pytest.approx(single_process_params[1]["toy"]["mse"], abs=1e-4)


def test_torchrun(tmp_path, single_process_params):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(find_free_port()), str(TOY_SCRIPT)]
    result = subprocess.run(
        command,
        env=_env(tmp_path, **NO_DROPOUT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_params(_final_params(tmp_path), single_process_params[0])


def test_failure_in_one_process_ends_all_processes(tmp_path):
    start = time.monotonic()
    result = _run_toy(tmp_path, "--num-gpus", "2", timeout=90, TOY_FAIL_RANK=1, TOY_FAIL_ITER=3)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "injected failure on rank 1 at iteration 3" in result.stderr
    assert elapsed < 60


def test_failure_on_one_machine_ends_the_other(tmp_path):
    codes, outputs, elapsed = _machines(
        tmp_path, find_free_port(), timeout=90, TOY_FAIL_RANK=1, TOY_FAIL_ITER=3
    )
    assert codes[0] != 0 and codes[1] != 0
    assert "injected failure on rank 1" in outputs[1][1]
    assert elapsed < 60
