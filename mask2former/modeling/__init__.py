"""Models: backbones, pixel decoders, transformer decoders, heads, meta-architectures.

Importing this package registers every implementation in its registry.
"""

from ..layers import ShapeSpec
from . import backbone, heads, meta_arch, pixel_decoder, transformer_decoder  # noqa: F401
from .backbone.backbone import Backbone
from .backbone.build import BACKBONE_REGISTRY, build_backbone
from .heads.build import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head
from .meta_arch.build import META_ARCH_REGISTRY, build_model
from .pixel_decoder.build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder

__all__ = [
    "BACKBONE_REGISTRY",
    "META_ARCH_REGISTRY",
    "PIXEL_DECODER_REGISTRY",
    "SEM_SEG_HEADS_REGISTRY",
    "TRANSFORMER_DECODER_REGISTRY",
    "Backbone",
    "ShapeSpec",
    "build_backbone",
    "build_model",
    "build_pixel_decoder",
    "build_sem_seg_head",
    "build_transformer_decoder",
]
