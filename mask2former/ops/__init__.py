"""Multi-scale deformable attention: Python front of the compiled kernels in ``ops/``.

The kernels live in the extension ``mask2former._C`` built at install time; without it they are
compiled on first use into a cache (``_jit``), and only if that fails does every call use the
pure-PyTorch reference, with a warning. The choice is logged once per device.

Beside it, :mod:`.bilinear` (bilinear sampling by gathers) and :mod:`.deterministic` (the
replacements for the torch functions that deterministic mode refuses on CUDA, used by the model).
"""

from ._extension import (
    FORCE_REFERENCE_ENV,
    KernelPath,
    cpu_kernel_available,
    cuda_kernel_available,
    extension_import_error,
)
from .ms_deform_attn import MSDeformAttn
from .ms_deform_attn_func import force_reference_path, ms_deform_attn, ms_deform_attn_reference

__all__ = [
    "FORCE_REFERENCE_ENV",
    "KernelPath",
    "MSDeformAttn",
    "cpu_kernel_available",
    "cuda_kernel_available",
    "extension_import_error",
    "force_reference_path",
    "ms_deform_attn",
    "ms_deform_attn_reference",
]
