"""Transformer-decoder registry.

A registered class is called as ``cls(cfg, in_channels, mask_classification=True)`` and
its ``forward(x, mask_features, mask=None)`` returns ``{"pred_logits": (N, Q, K+1),
"pred_masks": (N, Q, H/4, W/4), "aux_outputs": [{"pred_logits", "pred_masks"}, ...]}``.
For ``MultiScaleMaskedTransformerDecoder`` ``x`` is the list of multi-scale features;
for ``StandardTransformerDecoder`` it is one feature map. A video decoder
(``VideoMultiScaleMaskedTransformerDecoder``) also takes ``num_frames=T``: its N*T input frames
are N clips of T frames, and it returns one class per query and clip and masks
"pred_masks": (N, Q, T, H/4, W/4). The class attribute
``mask_loss_family`` ("point" or "full") names the mask losses the criterion trains its
predictions with when ``MODEL.MASK_FORMER.MASK_LOSS`` is "auto" (a subclass inherits it).
"""

from fvcore.common.registry import Registry

from mask2former.utils.registry import lookup

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = __doc__


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True):
    """Build the decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    decoder = lookup(
        TRANSFORMER_DECODER_REGISTRY, name, "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME"
    )
    return decoder(cfg, in_channels, mask_classification)
