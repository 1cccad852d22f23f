"""Normalisation layers: FrozenBatchNorm2d and the ``get_norm`` factory."""

from typing import Callable, Union

import torch
from torch import nn
from torch.nn import functional as F


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine terms, all stored as buffers.

    Keys match ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var) so that
    checkpoints load either way; none of them is a parameter.

    ``_version`` is detectron2's, recorded in ``state_dict._metadata``: version 1 stored only
    weight and bias (Caffe2 folded the statistics into them), so a checkpoint of version 1
    or without a version gets identity statistics where its weights come without them;
    version 2 used ``running_var`` without eps in its first releases, but detectron2 loads
    version 2 unchanged since it stopped subtracting eps (commit bd004fd4), and so do we.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad and x.dtype == self.weight.dtype:
            # One fused pass (inference); with gradients it would also compute the
            # gradients of the frozen statistics, so training keeps the formula below.
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                momentum=0.0,
                eps=self.eps,
            )
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)

    def fold_into(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        """The (weight, bias) of a convolution followed by this norm, as one convolution.

        weight: (O, ...) and bias (O,) or None of the convolution -> (weight, bias (O,)).
        """
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        if bias is not None:
            shift = shift + bias * scale
        return weight * scale.view(-1, *[1] * (weight.dim() - 1)), shift

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, local_metadata: dict, *args: object
    ) -> None:
        version = local_metadata.get("version")
        # Only where this module's weight is in the checkpoint: a checkpoint that does not
        # cover the module at all must leave its statistics as they are.
        if (version is None or version < 2) and prefix + "weight" in state_dict:
            state_dict.setdefault(prefix + "running_mean", torch.zeros_like(self.running_mean))
            state_dict.setdefault(prefix + "running_var", torch.ones_like(self.running_var))
        # BatchNorm2d checkpoints carry num_batches_tracked, which has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every BatchNorm in ``module`` (recursively) by a FrozenBatchNorm2d."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int):
    """A normalisation layer by name: "", BN, SyncBN, FrozenBN, GN (32 groups), LN; or None."""
    if norm is None or norm == "":
        return None
    if callable(norm):
        return norm(out_channels)
    factories = {
        "BN": nn.BatchNorm2d,
        "SyncBN": nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "GN": lambda channels: nn.GroupNorm(32, channels),
        "LN": lambda channels: LayerNorm2d(channels),
    }
    if norm not in factories:
        raise KeyError(f"unknown norm {norm!r}; choose one of {sorted(factories)} or ''")
    return factories[norm](out_channels)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an (N, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
