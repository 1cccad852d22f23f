"""Configs: a ``transformers`` config.json (and preprocessor_config.json) <-> our config.

Most settings are one field on each side and appear once, in a table of :class:`Field`
(``*_FIELDS``), read in both directions. What transformers' architectures always are is
written into our config from ``*_FIXED``; the ResNet depth, the pixel normalisation and the
checks are code. Which transformers model our config is: :mod:`.components`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from mask2former.config import CfgNode, get_cfg
from mask2former.modeling.backbone import D2SwinTransformer, build_resnet_backbone
from mask2former.modeling.heads import MaskFormerHead
from mask2former.modeling.meta_arch import MaskFormer

from .components import COMPONENTS, check_components, hf_backbone_type, hf_model_type
from .errors import ConversionError

__all__ = ["cfg_to_hf_config", "class_names", "hf_config_to_cfg", "import_transformers"]

# transformers' image processors normalise RGB pixels in [0, 1] with these by default.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]
RES = ["res2", "res3", "res4", "res5"]
REQUIRED = object()  # a Field default: config.json must have the field


class Field(NamedTuple):
    """One setting: our config key, the transformers config field, transformers' default
    (used where config.json leaves the field out) and a conversion applied on both sides."""

    ours: str
    hf: str
    default: Any = REQUIRED
    cast: Optional[Callable[[Any], Any]] = None


MASK2FORMER_FIELDS = (
    Field("MODEL.SEM_SEG_HEAD.CONVS_DIM", "feature_size", 256),
    Field("MODEL.SEM_SEG_HEAD.MASK_DIM", "mask_feature_size", 256),
    Field("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "common_stride", 4),
    Field("MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "encoder_layers", 6),
    Field("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "ignore_value", 255),
    Field("MODEL.MASK_FORMER.HIDDEN_DIM", "hidden_dim", 256),
    Field("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "num_queries", 100),
    Field("MODEL.MASK_FORMER.NHEADS", "num_attention_heads", 8),
    Field("MODEL.MASK_FORMER.DROPOUT", "dropout", 0.0, float),
    Field("MODEL.MASK_FORMER.DIM_FEEDFORWARD", "dim_feedforward", 2048),
    Field("MODEL.MASK_FORMER.DEC_LAYERS", "decoder_layers", 10),
    Field("MODEL.MASK_FORMER.PRE_NORM", "pre_norm", False),
    Field("MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", "enforce_input_projection", False),
    Field("MODEL.MASK_FORMER.DEEP_SUPERVISION", "use_auxiliary_loss", True),
    Field("MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", "no_object_weight", 0.1),
    Field("MODEL.MASK_FORMER.CLASS_WEIGHT", "class_weight", 2.0),
    Field("MODEL.MASK_FORMER.MASK_WEIGHT", "mask_weight", 5.0),
    Field("MODEL.MASK_FORMER.DICE_WEIGHT", "dice_weight", 5.0),
    Field("MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "train_num_points", 12544),
    Field("MODEL.MASK_FORMER.OVERSAMPLE_RATIO", "oversample_ratio", 3.0),
    Field("MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", "importance_sample_ratio", 0.75),
)
MASKFORMER_FIELDS = (
    Field("MODEL.SEM_SEG_HEAD.CONVS_DIM", "fpn_feature_size", 256),
    Field("MODEL.SEM_SEG_HEAD.MASK_DIM", "mask_feature_size", 256),
    Field("MODEL.MASK_FORMER.DEEP_SUPERVISION", "use_auxiliary_loss", False),
    Field("MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", "no_object_weight", 0.1),
    Field("MODEL.MASK_FORMER.CLASS_WEIGHT", "cross_entropy_weight", 1.0),
    Field("MODEL.MASK_FORMER.MASK_WEIGHT", "mask_weight", 20.0),
    Field("MODEL.MASK_FORMER.DICE_WEIGHT", "dice_weight", 1.0),
)
DETR_FIELDS = (  # MaskFormer's decoder_config
    Field("MODEL.MASK_FORMER.HIDDEN_DIM", "d_model", 256),
    Field("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "num_queries", 100),
    Field("MODEL.MASK_FORMER.NHEADS", "decoder_attention_heads", 8),
    Field("MODEL.MASK_FORMER.DROPOUT", "dropout", 0.1, float),
    Field("MODEL.MASK_FORMER.DIM_FEEDFORWARD", "decoder_ffn_dim", 2048),
    Field("MODEL.MASK_FORMER.DEC_LAYERS", "decoder_layers", 6),
)
SWIN_FIELDS = (
    Field("MODEL.SWIN.PRETRAIN_IMG_SIZE", "image_size", 224),
    Field("MODEL.SWIN.PATCH_SIZE", "patch_size", 4),
    Field("MODEL.SWIN.EMBED_DIM", "embed_dim"),
    Field("MODEL.SWIN.DEPTHS", "depths", cast=list),
    Field("MODEL.SWIN.NUM_HEADS", "num_heads", cast=list),
    Field("MODEL.SWIN.WINDOW_SIZE", "window_size"),
    Field("MODEL.SWIN.MLP_RATIO", "mlp_ratio", 4.0, float),
    Field("MODEL.SWIN.QKV_BIAS", "qkv_bias", True),
    Field("MODEL.SWIN.DROP_PATH_RATE", "drop_path_rate", 0.1),
    Field("MODEL.SWIN.APE", "use_absolute_embeddings", False),
)

# What transformers' models always are, in our config (and the decoders of COMPONENTS).
HEAD_FIXED = {
    "MODEL.META_ARCHITECTURE": MaskFormer.__name__,
    "MODEL.SEM_SEG_HEAD.NAME": MaskFormerHead.__name__,
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": RES,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
}
MASK2FORMER_FIXED = {
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
}
MASKFORMER_FIXED = {
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,  # transformers' MaskFormer builds no DETR encoder
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": True,  # transformers always projects res5 to d_model
}


# --------------------------------------------------------------------------- #
# transformers -> ours
# --------------------------------------------------------------------------- #
def class_names(hf_config: dict[str, Any]) -> list[str]:
    """Category names in contiguous id order, from ``id2label``."""
    id2label = hf_config.get("id2label") or {}
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(ids))):
        raise ConversionError(f"id2label ids must be 0..n-1, got {ids[:10]}...")
    return [id2label[str(i)] if str(i) in id2label else id2label[i] for i in ids]


def hf_config_to_cfg(
    hf_config: dict[str, Any], preprocessor: dict[str, Any] | None = None
) -> CfgNode:
    """Our config for a ``transformers`` config.json (and preprocessor_config.json) dict."""
    cfg = get_cfg()
    model_type = hf_config.get("model_type")
    if model_type == "mask2former":
        _mask2former_to_cfg(cfg, hf_config)
    elif model_type == "maskformer":
        _maskformer_to_cfg(cfg, hf_config)
    else:
        raise ConversionError(f"config.json: model_type {model_type!r} is not supported")
    decoder, pixel_decoder = COMPONENTS[model_type]
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = decoder.__name__
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = pixel_decoder.__name__
    backbone = hf_config.get("backbone_config")
    if not isinstance(backbone, dict):
        raise ConversionError(
            "config.json: needs a 'backbone_config' (timm backbones are not supported)"
        )
    _backbone_to_cfg(cfg, backbone)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(class_names(hf_config))
    _pixel_normalisation(cfg, preprocessor or {})
    return cfg


def _mask2former_to_cfg(cfg: CfgNode, c: dict[str, Any]) -> None:
    if c.get("encoder_feedforward_dim", 1024) != 1024:
        raise ConversionError("config.json: encoder_feedforward_dim must be 1024 (published)")
    if list(c.get("feature_strides", [4, 8, 16, 32])) != [4, 8, 16, 32]:
        raise ConversionError("config.json: feature_strides must be [4, 8, 16, 32]")
    _set_fixed(cfg, {**HEAD_FIXED, **MASK2FORMER_FIXED})
    _fields_to_cfg(cfg, MASK2FORMER_FIELDS, c, "config.json")


def _maskformer_to_cfg(cfg: CfgNode, c: dict[str, Any]) -> None:
    d = c.get("decoder_config") or {}
    if d.get("model_type", "detr") != "detr":
        raise ConversionError(f"config.json: decoder_config.model_type {d.get('model_type')!r}")
    _set_fixed(cfg, {**HEAD_FIXED, **MASKFORMER_FIXED})
    _fields_to_cfg(cfg, MASKFORMER_FIELDS, c, "config.json")
    _fields_to_cfg(cfg, DETR_FIELDS, d, "config.json: decoder_config")


def _backbone_to_cfg(cfg: CfgNode, backbone: dict[str, Any]) -> None:
    kind = backbone.get("model_type")
    out_features = backbone.get("out_features", STAGES)
    if list(out_features) != STAGES:
        raise ConversionError(f"backbone_config.out_features must be {STAGES}, got {out_features}")
    if kind in ("swin", "maskformer-swin"):
        _swin_to_cfg(cfg, backbone)
    elif kind == "resnet":
        _resnet_to_cfg(cfg, backbone)
    else:
        raise ConversionError(f"backbone_config.model_type {kind!r} is not swin or resnet")
    cfg.MODEL.BACKBONE.FREEZE_AT = 0


def _swin_to_cfg(cfg: CfgNode, b: dict[str, Any]) -> None:
    if b.get("hidden_act", "gelu") != "gelu" or b.get("layer_norm_eps", 1e-5) != 1e-5:
        raise ConversionError("backbone_config: Swin needs hidden_act gelu, layer_norm_eps 1e-5")
    cfg.MODEL.BACKBONE.NAME = D2SwinTransformer.__name__
    _fields_to_cfg(cfg, SWIN_FIELDS, b, "config.json: backbone_config")
    cfg.MODEL.SWIN.OUT_FEATURES = list(RES)


def _resnet_to_cfg(cfg: CfgNode, b: dict[str, Any]) -> None:
    layer_type, depths = b.get("layer_type", "bottleneck"), tuple(b["depths"])
    if (layer_type, depths) not in RESNET_DEPTHS:
        raise ConversionError(f"backbone_config: ResNet {layer_type} depths {depths} unsupported")
    hidden = list(b["hidden_sizes"])
    if hidden != [hidden[0] * 2**i for i in range(4)] or b.get("hidden_act", "relu") != "relu":
        raise ConversionError(f"backbone_config: hidden_sizes {hidden} must double per stage")
    if b.get("downsample_in_first_stage", False):
        raise ConversionError("backbone_config: downsample_in_first_stage is not supported")
    r = cfg.MODEL.RESNETS
    r.DEPTH = RESNET_DEPTHS[(layer_type, depths)]
    r.STEM_OUT_CHANNELS = b.get("embedding_size", 64)
    r.RES2_OUT_CHANNELS = hidden[0]
    r.WIDTH_PER_GROUP = hidden[0] // 4 if layer_type == "bottleneck" else hidden[0]
    r.NUM_GROUPS = 1
    r.STRIDE_IN_1X1 = bool(b.get("downsample_in_bottleneck", False))
    r.STEM_TYPE = "basic"
    r.NORM = "FrozenBN"
    r.OUT_FEATURES = list(RES)
    cfg.MODEL.BACKBONE.NAME = build_resnet_backbone.__name__


def _pixel_normalisation(cfg: CfgNode, preprocessor: dict[str, Any]) -> None:
    """RGB mean / std on 0-255 pixels (ImageNet by default) and the test-time resize, from the
    image processor's preprocessor_config.json."""
    scale = 255.0 if preprocessor.get("do_rescale", True) else 1.0
    mean = preprocessor.get("image_mean", IMAGENET_MEAN)
    std = preprocessor.get("image_std", IMAGENET_STD)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [round(m * scale, 4) for m in mean]
    cfg.MODEL.PIXEL_STD = [round(s * scale, 4) for s in std]
    size = preprocessor.get("size") or {}
    if "shortest_edge" in size:  # the processor's test-time resize
        cfg.INPUT.MIN_SIZE_TEST = size["shortest_edge"]
        cfg.INPUT.MAX_SIZE_TEST = size.get("longest_edge", cfg.INPUT.MAX_SIZE_TEST)


# --------------------------------------------------------------------------- #
# ours -> transformers
# --------------------------------------------------------------------------- #
def cfg_to_hf_config(cfg: CfgNode, names: list[str]):
    """The ``transformers`` config (a ``Mask2FormerConfig`` or ``MaskFormerConfig``) of our
    config, with ``id2label`` from ``names``. Needs ``transformers``."""
    transformers = import_transformers()
    if len(names) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
        raise ConversionError(
            f"{len(names)} class names for MODEL.SEM_SEG_HEAD.NUM_CLASSES = "
            f"{cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
        )
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    model_type = hf_model_type(cfg)
    check_components(cfg, model_type)
    if model_type == "mask2former":
        return transformers.Mask2FormerConfig(
            backbone_config=_hf_backbone_config(cfg, transformers),
            encoder_feedforward_dim=1024,
            **_fields_to_hf(cfg, MASK2FORMER_FIELDS),
            **labels,
        )
    mf = cfg.MODEL.MASK_FORMER
    if mf.ENC_LAYERS != 0 or mf.PRE_NORM:
        raise ConversionError(
            "transformers' MaskFormer needs MASK_FORMER.ENC_LAYERS 0 and PRE_NORM False"
        )
    backbone = _hf_backbone_config(cfg, transformers)
    decoder = transformers.DetrConfig(
        encoder_layers=0,
        use_timm_backbone=False,
        backbone_config=backbone,
        **_fields_to_hf(cfg, DETR_FIELDS),
    )
    return transformers.MaskFormerConfig(
        backbone_config=backbone,
        decoder_config=decoder,
        **_fields_to_hf(cfg, MASKFORMER_FIELDS),
        **labels,
    )


def import_transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConversionError("writing a Hugging Face checkpoint needs `transformers`") from e
    return transformers


def _hf_backbone_config(cfg: CfgNode, transformers):
    kind = hf_backbone_type(cfg)
    if kind == "resnet":
        return _hf_resnet_config(cfg, transformers)
    config_class = transformers.SwinConfig if kind == "swin" else transformers.MaskFormerSwinConfig
    return config_class(**_fields_to_hf(cfg, SWIN_FIELDS), out_features=list(STAGES))


def _hf_resnet_config(cfg: CfgNode, transformers):
    r = cfg.MODEL.RESNETS
    depth = {v: k for k, v in RESNET_DEPTHS.items()}.get(r.DEPTH)
    bottleneck = depth is not None and depth[0] == "bottleneck"
    width = r.RES2_OUT_CHANNELS // 4 if bottleneck else r.RES2_OUT_CHANNELS
    if (
        depth is None
        or r.STEM_TYPE != "basic"
        or r.NUM_GROUPS != 1
        or r.WIDTH_PER_GROUP != width
        or r.RES5_DILATION != 1
    ):
        raise ConversionError(
            "MODEL.RESNETS: transformers' ResNet needs STEM_TYPE basic, NUM_GROUPS 1, "
            "WIDTH_PER_GROUP = RES2_OUT_CHANNELS / 4 (bottleneck) and RES5_DILATION 1"
        )
    return transformers.ResNetConfig(
        embedding_size=r.STEM_OUT_CHANNELS,
        hidden_sizes=[r.RES2_OUT_CHANNELS * 2**i for i in range(4)],
        depths=list(depth[1]),
        layer_type=depth[0],
        downsample_in_bottleneck=r.STRIDE_IN_1X1,
        out_features=list(STAGES),
    )


# --------------------------------------------------------------------------- #
# Fields
# --------------------------------------------------------------------------- #
def _node(cfg: CfgNode, key: str) -> tuple[CfgNode, str]:
    """The node holding the dotted ``key`` and the key's last part."""
    *path, name = key.split(".")
    for part in path:
        cfg = cfg[part]
    return cfg, name


def _set_fixed(cfg: CfgNode, values: dict[str, Any]) -> None:
    for key, value in values.items():
        node, name = _node(cfg, key)
        node[name] = list(value) if isinstance(value, list) else value


def _fields_to_cfg(cfg: CfgNode, fields: tuple[Field, ...], source: dict, where: str) -> None:
    for field in fields:
        if field.default is REQUIRED and field.hf not in source:
            raise ConversionError(f"{where}: needs {field.hf!r}")
        value = source.get(field.hf, field.default)
        node, name = _node(cfg, field.ours)
        node[name] = field.cast(value) if field.cast else value


def _fields_to_hf(cfg: CfgNode, fields: tuple[Field, ...]) -> dict[str, Any]:
    values = {}
    for field in fields:
        node, name = _node(cfg, field.ours)
        value = node[name]
        values[field.hf] = field.cast(value) if field.cast else value
    return values
