"""Which ``transformers`` model our config is, from the classes its registry names resolve to.

Not from the names: a component registered again under another name converts as the class
it is. Another class, a subclass included (it may hold other weights or compute otherwise),
is refused with an error naming its config key; only the meta-architecture may be any
subclass of MaskFormer, as it just wires the parts. The strings that remain ("mask2former",
"swin", ...) are transformers' own model_type names.
"""

from __future__ import annotations

from mask2former.config import CfgNode
from mask2former.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PIXEL_DECODER_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    TRANSFORMER_DECODER_REGISTRY,
)
from mask2former.modeling.backbone import D2SwinTransformer, build_resnet_backbone
from mask2former.modeling.heads import MaskFormerHead
from mask2former.modeling.meta_arch import MaskFormer
from mask2former.modeling.pixel_decoder import BasePixelDecoder, MSDeformAttnPixelDecoder
from mask2former.modeling.transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
)
from mask2former.utils.registry import lookup

from .errors import ConversionError

__all__ = ["COMPONENTS", "check_components", "hf_backbone_type", "hf_model_type"]

#: Our transformer decoder and pixel decoder that each transformers model_type reimplements.
COMPONENTS = {
    "mask2former": (MultiScaleMaskedTransformerDecoder, MSDeformAttnPixelDecoder),
    "maskformer": (StandardTransformerDecoder, BasePixelDecoder),
}


def hf_model_type(cfg: CfgNode) -> str:
    """transformers' ``model_type`` of our config, from its transformer decoder's class:
    "mask2former" or "maskformer"."""
    key, name = (
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
        cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME,
    )
    decoder = _registered(TRANSFORMER_DECODER_REGISTRY, key, name)
    for model_type, (decoder_class, _) in COMPONENTS.items():
        if decoder is decoder_class:
            return model_type
    raise ConversionError(
        f"{_named(key, name, decoder)}; transformers has "
        + " and ".join(f"{d.__name__} ({t})" for t, (d, _) in COMPONENTS.items())
    )


def hf_backbone_type(cfg: CfgNode) -> str:
    """transformers' backbone ``model_type`` of our config, from its backbone's class:
    "swin", "maskformer-swin" or "resnet"."""
    key, name = "MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME
    builder = _registered(BACKBONE_REGISTRY, key, name)
    if builder is D2SwinTransformer:
        return "swin" if hf_model_type(cfg) == "mask2former" else "maskformer-swin"
    if builder is build_resnet_backbone:
        return "resnet"
    raise ConversionError(
        f"{_named(key, name, builder)} has no transformers counterpart "
        "(D2SwinTransformer or build_resnet_backbone)"
    )


def check_components(cfg: CfgNode, model_type: str) -> None:
    """transformers' models are a MaskFormer (a subclass too: it only wires the parts) with a
    MaskFormerHead and the pixel decoder that :data:`COMPONENTS` pairs with ``model_type``."""
    key, name = "MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE
    meta_arch = _registered(META_ARCH_REGISTRY, key, name)
    if not (isinstance(meta_arch, type) and issubclass(meta_arch, MaskFormer)):
        raise ConversionError(
            f"{_named(key, name, meta_arch)}; transformers' models are a MaskFormer"
        )
    head = cfg.MODEL.SEM_SEG_HEAD
    for key, name, registry, wanted in [
        ("MODEL.SEM_SEG_HEAD.NAME", head.NAME, SEM_SEG_HEADS_REGISTRY, MaskFormerHead),
        (
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
            head.PIXEL_DECODER_NAME,
            PIXEL_DECODER_REGISTRY,
            COMPONENTS[model_type][1],
        ),
    ]:
        found = _registered(registry, key, name)
        if found is not wanted:
            raise ConversionError(
                f"{_named(key, name, found)}; transformers' {model_type} has {wanted.__name__}"
            )


def _registered(registry, key: str, name: str):
    """What ``name`` (the value of config ``key``) is registered as in ``registry``."""
    try:
        return lookup(registry, name, key)
    except KeyError as e:
        raise ConversionError(e.args[0]) from e


def _named(key: str, name: str, found) -> str:
    """``KEY = 'name'``, and the class it names where that has another name."""
    return f"{key} = {name!r}" + ("" if name == found.__name__ else f" ({found.__name__})")
