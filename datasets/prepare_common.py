"""Shared by the preparation scripts: the dataset root, worker pools with a progress bar."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
from typing import Callable, Iterable, Sequence

import tqdm


def dataset_root() -> str:
    """``$DETECTRON2_DATASETS`` or "datasets", as the builtin dataset registration reads it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--root", default=dataset_root(), help="datasets root ($DETECTRON2_DATASETS)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes (1: run in this process)",
    )
    return parser


def run_parallel(func: Callable, jobs: Sequence, workers: int, desc: str) -> list:
    """``[func(*job) for job in jobs]`` over ``workers`` processes, with a tqdm progress bar."""
    if workers <= 1:
        return [func(*job) for job in tqdm.tqdm(jobs, desc=desc)]
    with mp.Pool(workers) as pool:
        results: Iterable = pool.imap(_star, [(func, job) for job in jobs], chunksize=8)
        return list(tqdm.tqdm(results, total=len(jobs), desc=desc))


def _star(func_and_job):
    func, job = func_and_job
    return func(*job)


def require_dir(path: str, hint: str) -> None:
    if not os.path.isdir(path):
        raise SystemExit(f"{path} not found: {hint}")


def load_ade20k_instance_mapping(path: str = "") -> dict[int, int]:
    """ADE20K instance class (1..100, the R channel of annotations_instance) -> 0-based 150 id.

    Read from ``ade20k_instance_catid_mapping.txt`` beside this script (columns: Instance100,
    SceneParse150, FullADE20K; 1-based; one header line).
    """
    path = path or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "ade20k_instance_catid_mapping.txt"
    )
    mapping = {}
    with open(path) as f:
        for line_no, line in enumerate(f.read().splitlines()[1:], start=2):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 columns, got {line!r}")
            mapping[int(fields[0])] = int(fields[1]) - 1
    return mapping


def write_json(obj, path: str) -> None:
    """Write through a temporary file and rename, so no half-written JSON is ever left."""
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
