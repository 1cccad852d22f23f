"""Replacements for the torch functions that torch refuses on CUDA in deterministic mode.

Under ``torch.use_deterministic_algorithms(True)`` torch raises a ``RuntimeError`` for CUDA
kernels that sum with float atomics. Three of them are on Mask2Former's training path (the list
in ``torch.use_deterministic_algorithms``' docstring, checked against the kernels, which call
``alertNotDeterministic``):

- the backward of ``F.interpolate`` in ``bilinear`` / ``bicubic`` mode
  (``upsample_bilinear2d_backward_out_cuda``): the deformable pixel decoder's top-down path,
  the full-resolution mask loss, the per-pixel baselines' loss, Swin's absolute positions;
- the backward of ``F.grid_sample`` (``grid_sampler_2d_backward_cuda``): ``point_sample`` in the
  point-sampled mask loss;
- the forward of ``nll_loss2d`` with a mean or sum (``nll_loss2d_forward_out_cuda_template``),
  which ``F.cross_entropy`` runs for input of more than two dimensions: the classification
  loss over (N, K + 1, Q) logits, the per-pixel baselines' loss.

The functions here call the torch function wherever torch allows it (it is faster) and compute
the same result with ops that have deterministic CUDA implementations only where torch would
refuse it: :func:`interpolate` by two matrix products, :func:`cross_entropy` over
(N * ..., C) rows (2-D ``nll_loss``, one CUDA block summing in a fixed order), and point
sampling by gathers (:func:`mask2former.ops.bilinear.sample`). Their CPU counterparts are
deterministic already: each thread writes its own (batch, channel) slice of the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "REFUSING_DEVICE_TYPES",
    "backward_refused",
    "cross_entropy",
    "interpolate",
    "interpolation_matrix",
    "refused",
]

#: Device types on which torch refuses the functions replaced here in deterministic mode. Tests
#: add "cpu" to run the replacements on a CPU.
REFUSING_DEVICE_TYPES: frozenset[str] = frozenset({"cuda"})


def refused(*tensors: Tensor) -> bool:
    """True when deterministic mode is on and a tensor is on a device where torch refuses
    the functions replaced here."""
    return torch.are_deterministic_algorithms_enabled() and any(
        t.device.type in REFUSING_DEVICE_TYPES for t in tensors
    )


def backward_refused(*tensors: Tensor) -> bool:
    """True where autograd would run a refused backward: :func:`refused`, with gradients on and
    one of ``tensors`` requiring one."""
    return refused(*tensors) and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# --------------------------------------------------------------------------- #
# Interpolation
# --------------------------------------------------------------------------- #
_MATRIX_MODES = ("bilinear", "bicubic")


def interpolation_matrix(
    in_size: int,
    out_size: int,
    mode: str,
    align_corners: bool | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(out_size, in_size): row ``o`` holds the weights ``F.interpolate`` gives output ``o`` along
    one axis of ``in_size`` pixels (bilinear and bicubic are separable).

    The weights are ``F.interpolate``'s own: it resizes the ``in_size`` unit vectors along H of an
    (1, in_size, in_size, 1) image, W staying one pixel (a weight of exactly 1).
    """
    if mode not in _MATRIX_MODES:
        raise ValueError(f"interpolation_matrix: mode must be one of {_MATRIX_MODES}, got {mode!r}")
    # channel i is the i-th unit vector along H: (1, in, in, 1) -> (1, in, out, 1)
    eye = torch.eye(in_size, device=device, dtype=dtype)[None, :, :, None]
    with torch.no_grad(), torch.autocast(torch.device(device).type, enabled=False):
        columns = F.interpolate(eye, size=(out_size, 1), mode=mode, align_corners=align_corners)
    return columns[0, :, :, 0].T


def interpolate(
    x: Tensor, size: tuple[int, int], mode: str = "bilinear", align_corners: bool | None = None
) -> Tensor:
    """``F.interpolate(x, size=size, mode=mode, align_corners=align_corners)`` of (N, C, H, W)
    ``x`` to (N, C, *size).

    Where torch would refuse its backward (deterministic mode, CUDA, a gradient; bilinear or
    bicubic mode) the same interpolation is ``A_h @ x @ A_w^T`` with :func:`interpolation_matrix`
    (matrix products have deterministic backward passes): equal to ``F.interpolate`` up to
    rounding (float32: within 1e-6 of the largest value), computed in float32 under autocast
    as ``F.interpolate`` is on CUDA. A non-finite value spreads along its row and column there
    (0 * inf is NaN), where ``F.interpolate`` keeps it local. Costs
    ``N * C * in_h * out_w * (in_w + out_h)`` multiply-adds instead of about ``4 * N * C * out_h
    * out_w``: 2.7 G instead of 67 M for 64 masks from 128x128 to 512x512.
    """
    if mode not in _MATRIX_MODES or not backward_refused(x):
        return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
    (in_h, in_w), (out_h, out_w) = x.shape[-2:], size
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type) and dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # upsampling is a float32 op under CUDA autocast
    a_h = interpolation_matrix(in_h, out_h, mode, align_corners, x.device, dtype)
    a_w = interpolation_matrix(in_w, out_w, mode, align_corners, x.device, dtype)
    with torch.autocast(x.device.type, enabled=False):
        # along W: (N, C, h, w) x (W, w) -> (N, C, h, W); then along H: (H, h) x (N, C, h, W) ->
        # (N, C, H, W), one (H, h) @ (h, N * C * W) product (a batched matmul would copy A_h
        # for every (N, C) image)
        rows = torch.einsum("nchw,Ww->nchW", x.to(dtype), a_w)
        return torch.einsum("Hh,nchW->ncHW", a_h, rows)


# --------------------------------------------------------------------------- #
# Cross-entropy
# --------------------------------------------------------------------------- #
def cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """``F.cross_entropy(logits, target, weight, ignore_index=ignore_index)`` (mean) of logits
    (N, C, d1, ...) and class indices (N, d1, ...).

    Where torch would refuse it (deterministic mode, CUDA, more than two dimensions) the same
    weighted mean over the (N * d1 * ..., C) rows, whose 2-D ``nll_loss`` sums in a fixed order.
    """
    if logits.dim() > 2 and refused(logits):
        # classes last, then one row per element: (N, C, d1, ...) -> (N * d1 * ..., C)
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        target = target.reshape(-1)
    return F.cross_entropy(logits, target, weight, ignore_index=ignore_index)
