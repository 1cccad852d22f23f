"""Meta-architectures; importing this package registers them in ``META_ARCH_REGISTRY``."""

from .build import META_ARCH_REGISTRY, build_model
from .maskformer_model import MaskFormer
from .semantic_seg import SemanticSegmentor

__all__ = ["META_ARCH_REGISTRY", "MaskFormer", "SemanticSegmentor", "build_model"]
