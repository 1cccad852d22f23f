"""Synchronised batch norm for multi-process CPU (gloo) runs, where torch's needs a GPU."""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
from torch import nn

from ..utils import comm


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are averaged over all processes.

    Each process contributes its per-channel mean and mean of squares with equal weight (every
    process has the same batch size). Gradients flow through the all-reduce.
    Input: (N, C, ...), as ``nn.SyncBatchNorm``. A ``BatchNorm2d`` (not an ``nn.SyncBatchNorm``,
    which DDP refuses on CPU), so that what finds BatchNorm layers finds it: the optimizer's
    normalisation-layer weight decay and precise BN (fvcore ``get_bn_modules``).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(
                f"CPUSyncBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or comm.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        mean = x.mean(dim=dims)
        meansqr = (x * x).mean(dim=dims)
        # (2C,) summed over processes, then averaged
        stats = dist_fn.all_reduce(torch.cat([mean, meansqr])) / comm.get_world_size()
        mean, meansqr = torch.split(stats, channels)
        var = meansqr - mean * mean
        self._update_running_stats(mean.detach(), var.detach(), x.numel() // channels)
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        shape = (1, channels) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)

    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n_local: int) -> None:
        if not self.track_running_stats:
            return
        n = n_local * comm.get_world_size()
        unbiased = var * n / max(n - 1, 1)
        momentum = 0.1 if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        self.num_batches_tracked += 1


def replace_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.SyncBatchNorm`` in ``module`` by an equal :class:`CPUSyncBatchNorm`."""
    if isinstance(module, nn.SyncBatchNorm):
        new = CPUSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        replacement = replace_sync_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module
