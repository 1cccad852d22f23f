"""Backbones; importing this package registers them in ``BACKBONE_REGISTRY``."""

from .backbone import Backbone
from .build import BACKBONE_REGISTRY, build_backbone
from .resnet import ResNet, build_resnet_backbone, build_resnet_deeplab_backbone

__all__ = [
    "BACKBONE_REGISTRY",
    "Backbone",
    "ResNet",
    "build_backbone",
    "build_resnet_backbone",
    "build_resnet_deeplab_backbone",
]
