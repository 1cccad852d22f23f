"""Finiteness checks over many tensors (gradients, a state dict) with one host synchronisation."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["nonfinite_names"]


def nonfinite_names(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that have a NaN or inf entry, in the given order.

    Other tensors (integer buffers) are skipped. When all are finite, the usual case, this
    costs one fused norm over all tensors and one device-to-host copy, whatever their number.
    """
    named = [(name, t.detach()) for name, t in named_tensors if t.is_floating_point()]
    if not named:
        return []
    # one 2-norm per tensor: NaN or inf in a tensor make its norm NaN or inf
    norms = torch._foreach_norm([t for _, t in named])
    device = norms[0].device
    if bool(torch.isfinite(torch.stack([n.to(device, torch.float32) for n in norms])).all()):
        return []
    # the norm also overflows for large finite entries: the entries decide
    return [name for name, t in named if not bool(torch.isfinite(t).all())]
