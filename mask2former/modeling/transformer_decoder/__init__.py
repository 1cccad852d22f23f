"""Transformer decoders; importing this package registers them in the registry."""

from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .maskformer_transformer_decoder import StandardTransformerDecoder
from .video_mask2former_transformer_decoder import VideoMultiScaleMaskedTransformerDecoder

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "StandardTransformerDecoder",
    "VideoMultiScaleMaskedTransformerDecoder",
    "build_transformer_decoder",
]
