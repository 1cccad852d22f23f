#!/usr/bin/env python
"""Trains the quick start in float32 and with bfloat16 AMP, each run through ``launch`` in a
process group of one, and checks that every loss falls and that the two precisions' PQ agree.

Each run is ``tools/train_net.py``'s ``main`` on ``configs/shapes/mask2former_R18_quickstart.yaml``
with ``SOLVER.MAX_ITER`` set to ``--iters`` (the learning-rate schedule follows) and ``SEED`` to
one of ``--seeds``, in a process of its own started as torchrun would start a world of one:
RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR and MASTER_PORT in the environment, so that
``mask2former.engine.launch`` creates the process group (NCCL where CUDA is available, else
gloo), which it does not do for one process otherwise. The worker checks the group's backend and
runs one ``all_reduce`` through it before training. Losses come from ``metrics.json`` (first and
last logged ``total_loss``), PQ / AP / mIoU from the evaluation after training.

After 300 iterations PQ still depends on the seed by a few points (on a CPU: 60.6, 62.4 and
63.7 for seeds 42, 43, 44 in float32), so the precisions are compared by their mean PQ over the
seeds.

    python benchmarks/quickstart_training.py --device cuda --iters 300 --seeds 42 43 44 \
        --parallel 6 --output-dir DIR
    python benchmarks/quickstart_training.py --device cpu --iters 60 --output-dir DIR  # CPU

Exits non-zero when a run fails, a loss does not fall to ``--max-loss-ratio`` of its first
value, or the mean PQ of bf16 and fp32 differ by more than ``--max-pq-diff`` points.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _checks import verdict  # the sibling module of these scripts

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/shapes/mask2former_R18_quickstart.yaml"
PRECISIONS = {
    "fp32": [],
    "bf16": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16"],
}

logger = logging.getLogger("mask2former")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--output-dir", type=Path, default=REPO / "output/quickstart_training")
    p.add_argument("--num-workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run per seed")
    p.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    p.add_argument("--max-loss-ratio", type=float, default=0.5)
    p.add_argument("--max-pq-diff", type=float, default=2.0)
    p.add_argument("--worker", choices=list(PRECISIONS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_name(precision: str, seed: int) -> str:
    return f"{precision}-s{seed}"


# ------------------------------------------------------------------------------ worker side
def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_group(device: str) -> str:
    """The backend of the process group ``launch`` made, after one all_reduce through it."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("launch created no process group")
    backend = dist.get_backend()
    expected = "nccl" if device == "cuda" or torch.cuda.is_available() else "gloo"
    if backend != expected:
        raise RuntimeError(f"process group backend {backend}, expected {expected}")
    tensor = torch.ones(1, device="cuda" if backend == "nccl" else "cpu")
    dist.all_reduce(tensor)
    if tensor.item() != dist.get_world_size():
        raise RuntimeError(f"all_reduce gave {tensor.item()} with world size 1")
    return backend


def _worker_main(args: argparse.Namespace, train_args: argparse.Namespace) -> None:
    import torch.distributed as dist

    train_net = _train_net()
    backend = _check_group(args.device)
    train_net.main(train_args)  # sets up the logger
    # read by the driver: the backend of the group training ran in
    logger.info("process group: backend %s, world size %d", backend, dist.get_world_size())


def run_worker(args: argparse.Namespace) -> None:
    from mask2former.engine import default_argument_parser, launch

    opts = [
        "MODEL.DEVICE", args.device,
        "SOLVER.MAX_ITER", str(args.iters),
        "DATALOADER.NUM_WORKERS", str(args.num_workers),
        "SEED", str(args.seed),
        "OUTPUT_DIR", str(args.output_dir / run_name(args.worker, args.seed)),
        *PRECISIONS[args.worker],
    ]  # fmt: skip
    train_args = default_argument_parser().parse_args(["--config-file", str(CONFIG), *opts])
    # the torchrun variables are set: launch joins a group of one instead of calling directly
    launch(_worker_main, 1, args=(args, train_args))


# ------------------------------------------------------------------------------ driver side
def _worker_env(port: int, threads: int) -> dict[str, str]:
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_run(
    args: argparse.Namespace, precision: str, seed: int
) -> tuple[subprocess.Popen, float]:
    from mask2former.engine.launch import find_free_port

    cmd = [sys.executable, __file__, "--worker", precision, "--seed", str(seed)]
    cmd += ["--device", args.device, "--iters", str(args.iters)]
    cmd += ["--output-dir", str(args.output_dir), "--num-workers", str(args.num_workers)]
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    env = _worker_env(find_free_port(), threads)
    with open(args.output_dir / f"{run_name(precision, seed)}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, time.perf_counter()


def wait(proc: subprocess.Popen, start: float, out_dir: Path, name: str) -> dict:
    """The run's results (see ``read_run``) and wall time, or {"error": ...}."""
    code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        tail = (out_dir / f"{name}.log").read_text().splitlines()[-15:]
        print(f"--- {name} failed (exit {code}); last lines of its log:", *tail, sep="\n")
        return {"error": f"exit code {code}, log {out_dir / (name + '.log')}"}
    try:
        return {**read_run(out_dir / name), "wall": wall}
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return {"error": f"unreadable results in {out_dir / name}: {exc!r}"}


def run_all(args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """Every (precision, seed) run, at most ``args.parallel`` at a time."""
    pending = [(p, seed) for seed in args.seeds for p in args.precisions]
    running, results = {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            key = pending.pop(0)
            running[key] = start_run(args, *key)
        key = next(iter(running))
        proc, start = running.pop(key)
        results[key] = wait(proc, start, args.output_dir, run_name(*key))
    return dict(
        sorted(results.items(), key=lambda kv: (kv[0][1], list(PRECISIONS).index(kv[0][0])))
    )


def read_run(out_dir: Path) -> dict:
    """Losses, iteration time and final metrics from ``metrics.json``, backend from the log."""
    records = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    train = [r for r in records if "total_loss" in r]
    final = [r for r in records if "panoptic_seg/PQ" in r][-1]
    log = (out_dir / "log.txt").read_text()
    backend = log.rsplit("process group: backend ", 1)[1].split(",")[0]
    return {
        "first": (train[0]["iteration"], train[0]["total_loss"]),
        "last": (train[-1]["iteration"], train[-1]["total_loss"]),
        "s_per_iter": statistics.median(r["time"] for r in train if "time" in r),
        "PQ": final["panoptic_seg/PQ"],
        "AP": final.get("segm/AP", float("nan")),
        "mIoU": final.get("sem_seg/mIoU", float("nan")),
        "backend": backend,
    }


def mean_pq(results: dict) -> dict[str, list[float]]:
    """PQ of every successful run, by precision."""
    by_precision: dict[str, list[float]] = {}
    for (precision, _), r in results.items():
        if "error" not in r:
            by_precision.setdefault(precision, []).append(r["PQ"])
    return by_precision


def check(results: dict, args: argparse.Namespace) -> list[str]:
    """The failed checks, as sentences."""
    failures = []
    for key, r in results.items():
        name = run_name(*key)
        if "error" in r:
            failures.append(f"{name}: {r['error']}")
            continue
        ratio = r["last"][1] / r["first"][1]
        if not ratio <= args.max_loss_ratio:
            failures.append(f"{name}: loss fell only to {ratio:.2f} of its first value")
        if args.device == "cuda" and r["backend"] != "nccl":
            failures.append(f"{name}: trained in a {r['backend']} group, not NCCL")
    pq = mean_pq(results)
    if not failures and {"fp32", "bf16"} <= pq.keys():
        diff = abs(statistics.mean(pq["bf16"]) - statistics.mean(pq["fp32"]))
        if not diff <= args.max_pq_diff:
            failures.append(f"mean PQ of bf16 and fp32 differ by {diff:.2f} > {args.max_pq_diff}")
    return failures


def report(results: dict, args: argparse.Namespace) -> None:
    print(
        f"quick start (shapes, R18), {args.iters} iterations on {args.device}, each run through "
        f"launch in a process group of one, {args.parallel} at a time"
    )
    header = (
        f"{'run':<10}{'group':>6}{'loss first':>16}{'loss last':>16}{'last/first':>11}"
        f"{'s/iter':>8}{'wall s':>8}{'PQ':>7}{'AP':>7}{'mIoU':>7}"
    )
    print(header)
    print("-" * len(header))
    for key, r in results.items():
        name = run_name(*key)
        if "error" in r:
            print(f"{name:<10} {r['error']}")
            continue
        first = f"{r['first'][1]:.2f} @{r['first'][0]}"
        last = f"{r['last'][1]:.2f} @{r['last'][0]}"
        print(
            f"{name:<10}{r['backend']:>6}{first:>16}{last:>16}{r['last'][1] / r['first'][1]:>11.3f}"
            f"{r['s_per_iter']:>8.3f}{r['wall']:>8.0f}{r['PQ']:>7.1f}{r['AP']:>7.1f}{r['mIoU']:>7.1f}"
        )
    pq = mean_pq(results)
    for precision, values in pq.items():
        spread = f", min {min(values):.1f}, max {max(values):.1f}" if len(values) > 1 else ""
        print(
            f"{precision}: mean PQ {statistics.mean(values):.2f} over {len(values)} run(s){spread}"
        )
    if {"fp32", "bf16"} <= pq.keys():
        diff = statistics.mean(pq["bf16"]) - statistics.mean(pq["fp32"])
        print(f"mean PQ bf16 - fp32: {diff:+.2f} points (goal: within {args.max_pq_diff})")


def main() -> int:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    from mask2former.data.datasets.builtin import datasets_root
    from mask2former.data.datasets.shapes import ensure_shapes_dataset

    args.output_dir.mkdir(parents=True, exist_ok=True)
    # generated once here rather than raced for by the runs
    ensure_shapes_dataset(datasets_root())
    results = run_all(args)
    report(results, args)
    return verdict(check(results, args), "quick-start training check")


if __name__ == "__main__":
    sys.exit(main())
