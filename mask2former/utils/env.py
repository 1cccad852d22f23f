"""Random seeding, deterministic algorithms and a report of the software environment."""

from __future__ import annotations

import importlib
import os
import platform
import random
import sys
from datetime import datetime

import numpy as np
import torch

_LIBRARIES = (
    "numpy",
    "torchvision",
    "fvcore",
    "iopath",
    "pycocotools",
    "scipy",
    "cv2",
    "PIL",
    "transformers",
)


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python's, NumPy's and torch's generators; ``None`` draws a seed. Returns it."""
    if seed is None or seed < 0:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f"))) % 2**31
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


#: The values of CUBLAS_WORKSPACE_CONFIG with which cuBLAS is deterministic (CUDA >= 10.2); torch
#: refuses cuBLAS calls in deterministic mode under any other value.
CUBLAS_DETERMINISTIC_CONFIGS = (":4096:8", ":16:8")


def use_deterministic_algorithms() -> None:
    """Make torch's algorithms deterministic in this process.

    ``torch.use_deterministic_algorithms(True)`` (torch raises for an op that has no
    deterministic implementation) and ``cudnn.deterministic``; sets ``CUBLAS_WORKSPACE_CONFIG``
    to ``:4096:8`` when unset. cuBLAS reads that variable when it first runs in the process, so
    call this before any CUDA matrix product. Raises ``ValueError`` naming the variable when it
    holds another value.
    """
    config = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_CONFIGS[0])
    if config not in CUBLAS_DETERMINISTIC_CONFIGS:
        raise ValueError(
            f"deterministic algorithms need CUBLAS_WORKSPACE_CONFIG unset or one of "
            f"{CUBLAS_DETERMINISTIC_CONFIGS}, got {config!r}"
        )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True


def _version(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def _gpu_rows() -> list[tuple[str, str]]:
    if not torch.cuda.is_available():
        return [("GPU available", "No")]
    rows = [("GPU available", "Yes"), ("CUDA (torch build)", str(torch.version.cuda))]
    for i in range(torch.cuda.device_count()):
        rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    return rows


def collect_env_info() -> str:
    """A two-column table: Python, platform, torch, CUDA/GPUs and library versions."""
    import mask2former

    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("platform", platform.platform()),
        ("mask2former", f"{mask2former.__version__} @{os.path.dirname(mask2former.__file__)}"),
        ("torch", f"{torch.__version__} @{os.path.dirname(torch.__file__)}"),
        ("torch threads", str(torch.get_num_threads())),
        *_gpu_rows(),
        *[(name, _version(name)) for name in _LIBRARIES],
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
