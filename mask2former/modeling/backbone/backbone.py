"""Base class of backbones: a module returning named feature maps with known strides."""

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from mask2former.layers import ShapeSpec


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network mapping ``(N, C, H, W)`` images to ``{name: feature map}``."""

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (N, C, H, W) -> {name: (N, C_name, H / stride_name, W / stride_name)}."""

    @property
    def size_divisibility(self) -> int:
        """Input sizes must be a multiple of this (0: any size)."""
        return 0

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
