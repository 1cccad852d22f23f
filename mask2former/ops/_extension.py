"""Loading of the deformable-attention kernels and the choice of kernel per call.

The kernels come from the extension ``mask2former._C`` built at install time or, when that is
missing, are compiled from ``ops/`` on first use (:mod:`mask2former.ops._jit`). Importing this
module never fails because they are missing, and never compiles: the first call that needs a
kernel does. Which implementation runs is decided by :func:`select_path`, an explicit test of the
tensor's device and of what was loaded; the choice is logged once per (device type, path).
"""

from __future__ import annotations

import enum
import logging
import os
from types import ModuleType

import torch

from . import _jit

logger = logging.getLogger(__name__)

_C: ModuleType | None  # the kernels once loaded: mask2former._C, or compiled on first use
try:
    from mask2former import _C
except ImportError as exc:  # the extension was not built, or cannot be loaded here
    _C = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None
_ORIGIN = "mask2former._C"  # where the loaded kernels come from
_JIT_ERROR: str | None = None  # why compiling them on first use failed
_JIT_TRIED = False


def _kernels() -> ModuleType | None:
    """The kernels; on the first call without mask2former._C they are compiled (or loaded from
    the cache), once per process."""
    global _C, _ORIGIN, _JIT_ERROR, _JIT_TRIED
    if _C is not None or _JIT_TRIED:
        return _C
    _JIT_TRIED = True
    try:
        _C = _jit.load_kernels(why=_IMPORT_ERROR or "")
    except _jit.JitUnavailable as exc:
        _JIT_ERROR = str(exc)
    else:
        _ORIGIN = _C.__file__
    return _C


#: Environment variable: when "1", every call uses the pure-PyTorch reference.
FORCE_REFERENCE_ENV = "MASK2FORMER_FORCE_REFERENCE_OPS"


class KernelPath(enum.Enum):
    """The implementation that computes one call of the op."""

    CUDA = "CUDA kernel"
    CPU = "C++ CPU kernel"
    REFERENCE = "pure-PyTorch reference (grid_sample)"


def extension_import_error() -> str | None:
    """Why ``mask2former._C`` could not be imported, or None when it was."""
    return _IMPORT_ERROR


def cpu_kernel_available() -> bool:
    """True when the C++ CPU kernel loads (compiling it on the first call if it must)."""
    return _kernels() is not None


def cuda_kernel_available() -> bool:
    """True when the loaded kernels include CUDA (installed without a GPU, compiled on first use
    only with one)."""
    kernels = _kernels()
    return kernels is not None and bool(kernels.with_cuda)


def extension() -> ModuleType:
    """The loaded kernels; raises RuntimeError when they are not available."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError(f"no deformable-attention kernels: {_unavailable_reason()}")
    return kernels


def _unavailable_reason() -> str:
    return (
        f"mask2former._C is not available ({_IMPORT_ERROR}) and the kernels could not be "
        f"compiled on first use: {_JIT_ERROR}"
    )


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
        logger.info("ms_deform_attn on %s: using the %s (%s)", device_type, path.value, _ORIGIN)
    elif forced:
        logger.info("ms_deform_attn on %s: using the %s (forced)", device_type, path.value)
    elif device_type not in ("cpu", "cuda"):
        logger.warning(
            "ms_deform_attn on %s: using the %s (the kernels are for CPU and CUDA only)",
            device_type,
            path.value,
        )
    elif _C is None:
        logger.warning(
            "ms_deform_attn on %s: using the %s, slower, because %s. Once that is fixed the next "
            "run compiles the kernels; or build them at install time, in the source tree, with "
            "`%s`. %s=1 selects the reference without this warning.",
            device_type,
            path.value,
            _unavailable_reason(),
            _jit.INSTALL_COMMAND,
            FORCE_REFERENCE_ENV,
        )
    else:
        logger.warning(
            "ms_deform_attn on %s: using the %s because the kernels in %s have none for this "
            "device; for CUDA build them with the toolkit, in the source tree: `CUDA_HOME=%s "
            "FORCE_CUDA=1 %s` (FORCE_CUDA=1 stops at a compile error)",
            device_type,
            path.value,
            _ORIGIN,
            os.environ.get("CUDA_HOME", "/usr/local/cuda"),
            _jit.INSTALL_COMMAND,
        )
