"""Linear layers whose float32 CPU products run on oneDNN.

PyTorch computes a float32 ``F.linear`` on a CPU with MKL's sgemm. On CPUs where MKL does not
use its AVX-512 kernels (AMD's, among others) oneDNN's float32 GEMM is 2-4x faster, in float32
throughout (no reduced-precision arithmetic: the results differ from MKL's by rounding only,
relative 1e-6). :func:`linear` takes that path, forward and backward, where it applies and
``F.linear`` everywhere else; :class:`Linear` is ``nn.Linear`` (same parameters, same
checkpoint keys) calling it.

The oneDNN path is taken by an explicit test (:func:`uses_onednn`): a float32 CPU input and
weight, a non-empty input, PyTorch built with oneDNN's linear op
(``torch.ops.mkldnn._linear_pointwise``, the op ``torch.compile`` itself emits on CPUs), and no
tracing, compiling or exporting (graphs keep the standard ``aten.linear``) and no autocast
(autocast's own lower-precision ``F.linear`` applies). ``MASK2FORMER_ONEDNN_LINEAR=0`` in the
environment turns the path off everywhere.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Linear", "linear", "onednn_linear_available", "uses_onednn"]

#: Environment variable: "0" keeps every product on ``F.linear``.
ONEDNN_LINEAR_ENV = "MASK2FORMER_ONEDNN_LINEAR"


def onednn_linear_available() -> bool:
    """True when this PyTorch has oneDNN and its linear op, and the environment allows it."""
    return (
        os.environ.get(ONEDNN_LINEAR_ENV, "1") != "0"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


_AVAILABLE = onednn_linear_available()


#: The weight's gradient of a product with at least this many rows per input or output feature
#: goes through ``torch.mm`` (see ``_OneDnnLinear.backward``).
TALL_ROWS_PER_FEATURE = 8

#: Smallest product, in multiply-adds (rows x inputs x outputs), that goes to oneDNN: below it
#: the call's overhead outweighs the faster kernel (forward + backward on one thread of the
#: 2-core VM: 64 x 64 x 64 takes 1.6x longer on oneDNN, 200 x 256 x 256 1.2x less time).
MIN_ONEDNN_MACS = 2**22


def uses_onednn(x: Tensor, weight: Tensor, min_macs: int = MIN_ONEDNN_MACS) -> bool:
    """Whether :func:`linear` computes ``x (..., in) @ weight (out, in).T`` on oneDNN (see the
    module docstring): also only for products of at least ``min_macs`` multiply-adds."""
    return (
        _AVAILABLE
        and x.numel() * weight.shape[0] >= min_macs
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str = "none") -> Tensor:
    """``x (..., in) @ weight (out, in).T + bias``, then ``activation`` ("none" or "relu")."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` of x (M, in) with oneDNN products in the forward and in both gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors  # x: (M, in)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # grad (M, out) @ weight (out, in): oneDNN's op takes its right factor as (in, out)
            grad_x = _onednn(grad, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            # grad.T (out, M) @ x (M, in); oneDNN's op reduces over the last dimension of both,
            # so both would be copied transposed: for a tall product (many rows, few features:
            # a 1x1 convolution's pixels) the copies cost more than MKL's product, which reads
            # them transposed in place (18432 x 64 x 256: 3.7 instead of 15.5 ms on two threads)
            if grad.shape[0] >= TALL_ROWS_PER_FEATURE * max(weight.shape):
                grad_weight = torch.mm(grad.t(), x)
            else:
                grad_weight = _onednn(grad.t().contiguous(), x.t().contiguous(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    relu: bool = False,
    min_macs: int = MIN_ONEDNN_MACS,
) -> Tensor:
    """``F.linear(x, weight, bias)`` (then ReLU with ``relu``), on oneDNN where it applies
    (:func:`uses_onednn` with ``min_macs``).

    x: (..., in); weight: (out, in); bias: (out,) or None -> (..., out).
    """
    if not uses_onednn(x, weight, min_macs):
        out = F.linear(x, weight, bias)
        return F.relu(out) if relu else out
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        # no gradient: the ReLU runs inside oneDNN's product
        return _onednn(x, weight, bias, "relu" if relu else "none")
    # (..., in) -> (M, in): oneDNN returns a view for more dimensions, and autograd forbids
    # in-place changes of views made inside a Function, so the view is made here
    out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    out = out.view(*x.shape[:-1], weight.shape[0])
    return F.relu(out) if relu else out


class Linear(nn.Linear):
    """``nn.Linear`` computed by :func:`linear` (the same parameters and checkpoint keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
