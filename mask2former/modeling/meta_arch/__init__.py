"""Meta-architectures; importing this package registers them in ``META_ARCH_REGISTRY``."""

from .build import META_ARCH_REGISTRY, build_model
from .maskformer_model import MaskFormer
from .semantic_seg import SemanticSegmentor
from .video_maskformer_model import VideoMaskFormer

__all__ = [
    "META_ARCH_REGISTRY",
    "MaskFormer",
    "SemanticSegmentor",
    "VideoMaskFormer",
    "build_model",
]
