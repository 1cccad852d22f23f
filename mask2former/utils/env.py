"""Random seeding and a report of the software environment."""

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
