"""Conv2d with optional norm and activation, and detectron2's weight initialisers."""

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .batch_norm import FrozenBatchNorm2d
from .linear import linear, uses_onednn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by ``norm`` and ``activation`` when given.

    The norm is a submodule named ``norm`` so checkpoint keys read ``<conv>.norm.weight``.

    Two ways of computing the same function, equal up to rounding: a ``FrozenBatchNorm2d``
    norm is folded into the convolution's weight and bias (one pass over the output instead
    of two), and a 1x1 convolution whose product :func:`~mask2former.layers.linear.linear`
    computes on oneDNN (float32 on a CPU) runs as that product over the channels of each
    pixel, giving a channels-last output (which the convolutions after it keep).
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
        weight, bias, norm = self.weight, self.bias, self.norm
        if isinstance(norm, FrozenBatchNorm2d):
            weight, bias, norm = *norm.fold_into(weight, bias), None
        if self._is_pointwise() and uses_onednn(x, weight):
            x = pointwise_conv(x, weight, bias, self.stride)
        else:
            x = self._conv_forward(x, weight, bias)
        if norm is not None:
            x = norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _is_pointwise(self) -> bool:
        """A 1x1 kernel without padding or groups: a linear map of each (strided) pixel."""
        return (
            self.kernel_size == (1, 1)
            and self.padding in ((0, 0), "valid")
            and self.groups == 1
            and self.padding_mode == "zeros"
        )


def pointwise_conv(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: tuple[int, int]
) -> Tensor:
    """A 1x1 convolution as :func:`~mask2former.layers.linear.linear` over channels.

    x: (N, C, H, W); weight: (O, C, 1, 1) -> (N, O, H', W') in channels-last memory.
    """
    if stride != (1, 1):
        x = x[:, :, :: stride[0], :: stride[1]]
    # (N, C, H, W) -> (N, H, W, C) -> (N, H, W, O) -> (N, O, H, W), a channels-last view
    return linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)


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
