"""Pixel-decoder registry.

A registered class is called as ``cls(cfg, input_shape)`` with ``input_shape`` the
backbone's ``{name: ShapeSpec}``. ``forward_features(features)`` returns
``(mask_features (N, MASK_DIM, H/4, W/4), transformer_encoder_features or None,
multi_scale_features: list of (N, CONVS_DIM, h_i, w_i), lowest resolution first)``.
"""

from fvcore.common.registry import Registry

from mask2former.layers import ShapeSpec
from mask2former.utils.registry import lookup

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = __doc__


def build_pixel_decoder(cfg, input_shape: dict[str, ShapeSpec]):
    """Build the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    decoder = lookup(PIXEL_DECODER_REGISTRY, name, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME")(
        cfg, input_shape
    )
    if not callable(getattr(decoder, "forward_features", None)):
        raise TypeError(f"pixel decoder {name} has no forward_features method")
    return decoder
