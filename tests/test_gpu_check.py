"""``.ci/gpu-check`` and the goal checks of the scripts it runs, without a GPU: the command stops
at once, saying why, where no GPU is visible; each script's pass/fail logic on made-up figures."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    # the scripts import their sibling module _checks, as when run as scripts
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", REPO / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: gpu-check would run")
def test_gpu_check_stops_clearly_without_a_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    env.pop("GPU_CHECK_DEVICE", None)
    proc = subprocess.run(
        ["bash", str(REPO / ".ci/gpu-check")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.log").read_text()
    assert "no CUDA GPU is visible" in summary
    assert "env          FAILED (exit 1)" in summary and "gpu-check FAILED" in summary
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        assert {"./wheels.log", "./env.log"} <= set(tar.getnames())


def _row(size, device, path, dtype, fwd, fwd_bwd, ref=(10.0, 30.0)):
    return (size, device, path, dtype, fwd, fwd_bwd, ref[0] / fwd, ref[1] / fwd_bwd, 0.0, 0.0)


def test_attention_goals():
    check_goals = _benchmark("ms_deform_attn").check_goals
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    rows = [
        _row(512, "cuda", "reference", f32, 10.0, 30.0),
        _row(512, "cuda", "CUDA kernel", f32, 1.0, 5.0),  # forward+backward 6x
        _row(512, "cuda", "CUDA kernel", bf16, 0.8, 4.0),
        _row(512, "cuda", "CUDA kernel", f16, 0.8, 4.0),
    ]
    assert check_goals(rows, min_speedup=5.0) == []
    assert len(check_goals(rows, min_speedup=7.0)) == 1  # 6x < 7x
    rows[3] = _row(512, "cuda", "CUDA kernel", f16, 0.8, 5.5)  # half backward slower than fp32
    (failure,) = check_goals(rows, min_speedup=5.0)
    assert "512 cuda CUDA kernel float16: not faster than float32" in failure


def _run(first: float, last: float, pq: float, backend: str = "nccl") -> dict:
    return {"first": (19, first), "last": (299, last), "PQ": pq, "backend": backend}


def test_training_checks():
    training = _benchmark("quickstart_training")
    args = argparse.Namespace(device="cuda", max_loss_ratio=0.5, max_pq_diff=2.0)
    results = {
        ("fp32", 42): _run(40.0, 11.0, 60.0),
        ("fp32", 43): _run(40.0, 11.0, 63.0),
        ("bf16", 42): _run(40.0, 11.0, 64.0),
        ("bf16", 43): _run(40.0, 11.0, 62.0),
    }
    assert training.check(results, args) == []  # means 61.5 and 63.0
    results["bf16", 43] = _run(40.0, 11.0, 64.0)  # means 61.5 and 64.0
    assert training.check(results, args) == ["mean PQ of bf16 and fp32 differ by 2.50 > 2.0"]
    results["bf16", 43] = _run(40.0, 30.0, 62.0, backend="gloo")
    assert training.check(results, args) == [
        "bf16-s43: loss fell only to 0.75 of its first value",
        "bf16-s43: trained in a gloo group, not NCCL",
    ]
    results["bf16", 43] = {"error": "exit code 1"}
    assert training.check(results, args) == ["bf16-s43: exit code 1"]
