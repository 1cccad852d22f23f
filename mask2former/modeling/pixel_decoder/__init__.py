"""Pixel decoders; importing this package registers them in ``PIXEL_DECODER_REGISTRY``."""

from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .fpn import BasePixelDecoder, TransformerEncoderPixelDecoder
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = [
    "PIXEL_DECODER_REGISTRY",
    "BasePixelDecoder",
    "MSDeformAttnPixelDecoder",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]
