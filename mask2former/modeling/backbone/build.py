"""Backbone registry.

A registered object is called as ``obj(cfg, input_shape)`` with ``input_shape`` a
:class:`ShapeSpec` of the image (channels only), and returns a :class:`Backbone`
whose ``forward(images: (N, C, H, W))`` returns ``{name: (N, C_i, H / s_i, W / s_i)}``
for the names in ``output_shape()``.
"""

from typing import Optional

from fvcore.common.registry import Registry

from mask2former.layers import ShapeSpec
from mask2former.utils.registry import lookup

from .backbone import Backbone

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = __doc__


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    builder = lookup(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME")
    backbone = builder(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{cfg.MODEL.BACKBONE.NAME} returned {type(backbone)}, not a Backbone")
    return backbone
