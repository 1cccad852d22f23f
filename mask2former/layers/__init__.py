"""Building blocks shared by backbones and heads."""

from .batch_norm import FrozenBatchNorm2d, LayerNorm2d, get_norm
from .shape_spec import ShapeSpec
from .wrappers import Conv2d, c2_msra_fill, c2_xavier_fill

__all__ = [
    "Conv2d",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "ShapeSpec",
    "c2_msra_fill",
    "c2_xavier_fill",
    "get_norm",
]
