"""Backbones; importing this package registers them in ``BACKBONE_REGISTRY``."""

from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .resnet import ResNet, build_resnet_backbone, build_resnet_deeplab_backbone
from .swin import D2SwinTransformer

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "D2SwinTransformer",
    "ResNet",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
]
