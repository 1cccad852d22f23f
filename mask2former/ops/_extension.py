"""Loading of the compiled extension ``mask2former._C`` and the choice of kernel per call.

The extension is optional: importing this module never fails because it is missing. Which
implementation runs is decided by :func:`select_path`, an explicit test of the tensor's device
and of what was compiled; the choice is logged once per (device type, path).
"""

from __future__ import annotations

import enum
import logging
import os
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

_C: ModuleType | None
try:
    from mask2former import _C
except ImportError as exc:  # the extension was not built, or cannot be loaded here
    _C = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None

#: Environment variable: when "1", every call uses the pure-PyTorch reference.
FORCE_REFERENCE_ENV = "MASK2FORMER_FORCE_REFERENCE_OPS"


class KernelPath(enum.Enum):
    """The implementation that computes one call of the op."""

    CUDA = "CUDA kernel (mask2former._C)"
    CPU = "C++ CPU kernel (mask2former._C)"
    REFERENCE = "pure-PyTorch reference (grid_sample)"


def extension_import_error() -> str | None:
    """Why ``mask2former._C`` could not be imported, or None when it was."""
    return _IMPORT_ERROR


def cpu_kernel_available() -> bool:
    """True when the C++ CPU kernel was compiled and loads."""
    return _C is not None


def cuda_kernel_available() -> bool:
    """True when the CUDA kernel was compiled into the extension (a GPU is not required)."""
    return _C is not None and bool(_C.with_cuda)


def extension() -> ModuleType:
    """The loaded extension module; raises RuntimeError when it is not available."""
    if _C is None:
        raise RuntimeError(f"mask2former._C is not available ({_IMPORT_ERROR})")
    return _C


def env_forces_reference() -> bool:
    """True when the environment variable ``MASK2FORMER_FORCE_REFERENCE_OPS`` is "1"."""
    return os.environ.get(FORCE_REFERENCE_ENV, "0") == "1"


def select_path(device: torch.device, force_reference: bool) -> KernelPath:
    """The implementation for a call whose tensors live on ``device``."""
    if force_reference:
        path = KernelPath.REFERENCE
    elif device.type == "cuda" and cuda_kernel_available():
        path = KernelPath.CUDA
    elif device.type == "cpu" and cpu_kernel_available():
        path = KernelPath.CPU
    else:
        path = KernelPath.REFERENCE
    _log_once(device.type, path, force_reference)
    return path


_LOGGED: set[tuple[str, KernelPath]] = set()


def _log_once(device_type: str, path: KernelPath, forced: bool) -> None:
    if (device_type, path) in _LOGGED:
        return
    _LOGGED.add((device_type, path))
    if path is not KernelPath.REFERENCE:
        logger.info("ms_deform_attn on %s: using the %s", device_type, path.value)
    elif forced:
        logger.info("ms_deform_attn on %s: using the %s (forced)", device_type, path.value)
    elif _C is None:
        logger.warning(
            "ms_deform_attn on %s: using the %s because mask2former._C is not available (%s); "
            "rebuild with `pip install -e .` for the compiled kernels",
            device_type,
            path.value,
            _IMPORT_ERROR,
        )
    else:
        logger.warning(
            "ms_deform_attn on %s: using the %s because no kernel for this device was compiled",
            device_type,
            path.value,
        )
