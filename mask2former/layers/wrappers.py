"""Conv2d with optional norm and activation, and detectron2's weight initialisers."""

from typing import Callable, Optional

import torch
from torch import nn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by ``norm`` and ``activation`` when given.

    The norm is a submodule named ``norm`` so checkpoint keys read ``<conv>.norm.weight``.
    """

    def __init__(
        self,
        *args,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill: kaiming-uniform with a=1 on the weight, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2's MSRAFill: kaiming-normal (fan_out, relu) on the weight, zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)
