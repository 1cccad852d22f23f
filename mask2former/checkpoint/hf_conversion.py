"""Conversion between Hugging Face ``transformers`` checkpoints and ours, both directions.

Ours is the published Mask2Former / MaskFormer layout (detectron2 key names, e.g.
``sem_seg_head.predictor.class_embed.weight``). Supported on the Hugging Face side:

- ``Mask2FormerForUniversalSegmentation`` (model_type "mask2former") with a Swin
  (``SwinBackbone``) or ResNet (``ResNetBackbone``) backbone;
- ``MaskFormerForInstanceSegmentation`` (model_type "maskformer") with a Swin
  (``MaskFormerSwinBackbone``) or ResNet backbone and its DETR decoder.

Weights are renamed by a table of rules (:data:`MASK2FORMER_RULES`, :data:`MASKFORMER_RULES`);
a rule is a pair of key templates whose ``{name}`` fields are layer indices (``{name+K}`` or
``{K-name}`` where the two sides number differently). Attention projections that
``transformers`` keeps separate (query, key, value) are concatenated into our fused
``in_proj_weight`` / ``qkv`` and split again on the way back. Configs are converted by
:func:`hf_config_to_cfg` and :func:`cfg_to_hf_config`; the directory-level entry points are
:func:`convert_hf_to_ours` and :func:`convert_ours_to_hf`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mask2former.config import CfgNode, get_cfg

from .io import read_checkpoint

__all__ = [
    "MASK2FORMER_RULES",
    "MASKFORMER_RULES",
    "ConversionError",
    "cfg_to_hf_config",
    "convert_hf_to_ours",
    "convert_ours_to_hf",
    "hf_config_to_cfg",
    "hf_to_ours_state_dict",
    "ours_to_hf_state_dict",
]

logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted; names the key, field or file."""


# --------------------------------------------------------------------------- #
# Key templates
# --------------------------------------------------------------------------- #
_FIELD = re.compile(r"\{(?:(\w+)([+-]\d+)?|(\d+)-(\w+))\}")


@dataclass(frozen=True)
class _Template:
    """A key template such as ``backbone.res{s+2}.{b}.conv1.``.

    A field ``{name}`` or ``{name+K}`` holds ``name + K``; ``{K-name}`` holds ``K - name``.
    """

    text: str

    def fields(self) -> list[tuple[str, int, int]]:
        """(name, sign, offset) per field: the field holds ``sign * name + offset``."""
        out = []
        for m in _FIELD.finditer(self.text):
            if m.group(1):
                out.append((m.group(1), 1, int(m.group(2) or 0)))
            else:
                out.append((m.group(4), -1, int(m.group(3))))
        return out

    def regex(self, whole: bool) -> re.Pattern:
        pattern, last = "", 0
        for m in _FIELD.finditer(self.text):
            pattern += re.escape(self.text[last : m.start()]) + r"(\d+)"
            last = m.end()
        pattern += re.escape(self.text[last:]) + ("$" if whole else "")
        return re.compile("^" + pattern)

    def match(self, key: str, whole: bool) -> tuple[dict[str, int], str] | None:
        """Field values and the rest of ``key`` after the template, or None."""
        m = self.regex(whole).match(key)
        if m is None:
            return None
        values = {}
        for (name, sign, offset), text in zip(self.fields(), m.groups()):
            values[name] = sign * (int(text) - offset)
        if any(v < 0 for v in values.values()):
            return None
        return values, key[m.end() :]

    def format(self, values: dict[str, int]) -> str:
        def field(m: re.Match) -> str:
            if m.group(1):
                return str(values[m.group(1)] + int(m.group(2) or 0))
            return str(int(m.group(3)) - values[m.group(4)])

        return _FIELD.sub(field, self.text)


@dataclass(frozen=True)
class Rule:
    """``hf`` and ``ours`` key templates. A prefix rule (``part`` None) keeps the rest of the
    key; a part rule maps a whole key to slice ``part`` of ``num_parts`` equal slices (along
    dim 0) of a fused tensor. A ``legacy`` rule reads the names that ``save_pretrained`` writes
    (and the published Hugging Face checkpoints use) where they differ from the in-memory
    names of transformers 5.x; it is used only towards ours."""

    hf: str
    ours: str
    part: int | None = None
    num_parts: int = 3
    legacy: bool = False


def _prefix(hf: str, ours: str) -> list[Rule]:
    return [Rule(hf, ours)]


def _fused(hf_parts: tuple[str, ...], ours: str, suffixes=("weight", "bias")) -> list[Rule]:
    """Separate projections ``hf_parts`` (e.g. q, k, v) <-> slices of one fused tensor."""
    return [
        Rule(f"{hf}.{s}", ours.format_map(_Suffix(s)), part=i, num_parts=len(hf_parts))
        for s in suffixes
        for i, hf in enumerate(hf_parts)
    ]


class _Suffix(dict):
    """``str.format_map`` helper: fills ``{suffix}`` and leaves index fields alone."""

    def __init__(self, suffix: str):
        super().__init__(suffix=suffix)

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# --------------------------------------------------------------------------- #
# Rule tables
# --------------------------------------------------------------------------- #
_ENC = "model.pixel_level_module.encoder."
_PD = "model.pixel_level_module.decoder."
_TM = "model.transformer_module."
_P = "sem_seg_head.pixel_decoder."
_T = "sem_seg_head.predictor."

# transformers' ResNetBackbone <-> detectron2 ResNet. BatchNorm <-> FrozenBatchNorm2d.
_RESNET_RULES = [
    *_prefix(_ENC + "embedder.embedder.convolution.", "backbone.stem.conv1."),
    *_prefix(_ENC + "embedder.embedder.normalization.", "backbone.stem.conv1.norm."),
    *_prefix(
        _ENC + "encoder.stages.{s}.layers.{b}.shortcut.convolution.",
        "backbone.res{s+2}.{b}.shortcut.",
    ),
    *_prefix(
        _ENC + "encoder.stages.{s}.layers.{b}.shortcut.normalization.",
        "backbone.res{s+2}.{b}.shortcut.norm.",
    ),
    *_prefix(
        _ENC + "encoder.stages.{s}.layers.{b}.layer.{k}.convolution.",
        "backbone.res{s+2}.{b}.conv{k+1}.",
    ),
    *_prefix(
        _ENC + "encoder.stages.{s}.layers.{b}.layer.{k}.normalization.",
        "backbone.res{s+2}.{b}.conv{k+1}.norm.",
    ),
]

_SWIN_BLOCK = "backbone.layers.{i}.blocks.{j}."
# transformers' SwinBackbone (used by Mask2Former) <-> the published D2SwinTransformer.
_SWIN_RULES = [
    *_fused(
        tuple(
            _ENC + "swin.encoder.layers.{i}.blocks.{j}.attention." + p
            for p in ("q_proj", "k_proj", "v_proj")
        ),
        _SWIN_BLOCK + "attn.qkv.{suffix}",
    ),
    *_prefix(_ENC + "swin.embeddings.patch_embeddings.projection.", "backbone.patch_embed.proj."),
    *_prefix(_ENC + "swin.embeddings.norm.", "backbone.patch_embed.norm."),
    *_prefix(
        _ENC
        + "swin.encoder.layers.{i}.blocks.{j}.attention.relative_position_bias."
        + "relative_position_bias_table",
        _SWIN_BLOCK + "attn.relative_position_bias_table",
    ),
    *_prefix(
        _ENC + "swin.encoder.layers.{i}.blocks.{j}.attention.o_proj.", _SWIN_BLOCK + "attn.proj."
    ),
    *_prefix(_ENC + "swin.encoder.layers.{i}.blocks.{j}.layernorm_before.", _SWIN_BLOCK + "norm1."),
    *_prefix(_ENC + "swin.encoder.layers.{i}.blocks.{j}.layernorm_after.", _SWIN_BLOCK + "norm2."),
    *_prefix(_ENC + "swin.encoder.layers.{i}.blocks.{j}.mlp.", _SWIN_BLOCK + "mlp."),
    *_prefix(_ENC + "swin.encoder.layers.{i}.downsample.", "backbone.layers.{i}.downsample."),
    *_prefix(_ENC + "hidden_states_norms.stage{s}.", "backbone.norm{s-1}."),
]


def _legacy_swin_rules(root: str, legacy: bool) -> list[Rule]:
    """Swin blocks named ``attention.self.query`` ... ``output.dense`` under ``root``:
    transformers' MaskFormerSwinBackbone, and the file layout of its SwinBackbone."""
    block = root + "encoder.layers.{i}.blocks.{j}."
    rules = [
        *_fused(
            tuple(block + "attention.self." + p for p in ("query", "key", "value")),
            _SWIN_BLOCK + "attn.qkv.{suffix}",
        ),
        *_prefix(root + "embeddings.patch_embeddings.projection.", "backbone.patch_embed.proj."),
        *_prefix(root + "embeddings.norm.", "backbone.patch_embed.norm."),
        *_prefix(block + "attention.self.relative_", _SWIN_BLOCK + "attn.relative_"),
        *_prefix(block + "attention.output.dense.", _SWIN_BLOCK + "attn.proj."),
        *_prefix(block + "layernorm_before.", _SWIN_BLOCK + "norm1."),
        *_prefix(block + "layernorm_after.", _SWIN_BLOCK + "norm2."),
        *_prefix(block + "intermediate.dense.", _SWIN_BLOCK + "mlp.fc1."),
        *_prefix(block + "output.dense.", _SWIN_BLOCK + "mlp.fc2."),
        *_prefix(root + "encoder.layers.{i}.downsample.", "backbone.layers.{i}.downsample."),
    ]
    return [dataclasses.replace(r, legacy=legacy) for r in rules]


# transformers' MaskFormerSwinBackbone <-> the published D2SwinTransformer.
_MASKFORMER_SWIN_RULES = [
    *_legacy_swin_rules(_ENC + "model.", legacy=False),
    *_prefix(_ENC + "hidden_states_norms.{s}.", "backbone.norm{s}."),
]
_SWIN_RULES += _legacy_swin_rules(_ENC, legacy=True)

_M2F_LAYER = _TM + "decoder.layers.{i}."
_M2F_HEAD_RULES = [
    # MSDeformAttnPixelDecoder
    *_prefix(_PD + "input_projections.", _P + "input_proj."),
    *_prefix(_PD + "level_embed", _P + "transformer.level_embed"),
    *_prefix(
        _PD + "encoder.layers.{i}.self_attn.", _P + "transformer.encoder.layers.{i}.self_attn."
    ),
    *_prefix(
        _PD + "encoder.layers.{i}.self_attn_layer_norm.",
        _P + "transformer.encoder.layers.{i}.norm1.",
    ),
    *_prefix(_PD + "encoder.layers.{i}.fc1.", _P + "transformer.encoder.layers.{i}.linear1."),
    *_prefix(_PD + "encoder.layers.{i}.fc2.", _P + "transformer.encoder.layers.{i}.linear2."),
    *_prefix(
        _PD + "encoder.layers.{i}.final_layer_norm.", _P + "transformer.encoder.layers.{i}.norm2."
    ),
    *_prefix(_PD + "mask_projection.", _P + "mask_features."),
    *_prefix(_PD + "adapter_{k}.0.", _P + "adapter_{k}."),
    *_prefix(_PD + "adapter_{k}.1.", _P + "adapter_{k}.norm."),
    *_prefix(_PD + "layer_{k}.0.", _P + "layer_{k}."),
    *_prefix(_PD + "layer_{k}.1.", _P + "layer_{k}.norm."),
    # MultiScaleMaskedTransformerDecoder
    *_fused(
        tuple(_M2F_LAYER + "self_attn." + p for p in ("q_proj", "k_proj", "v_proj")),
        _T + "transformer_self_attention_layers.{i}.self_attn.in_proj_{suffix}",
    ),
    *_prefix(
        _M2F_LAYER + "self_attn.out_proj.",
        _T + "transformer_self_attention_layers.{i}.self_attn.out_proj.",
    ),
    *_prefix(
        _M2F_LAYER + "self_attn_layer_norm.", _T + "transformer_self_attention_layers.{i}.norm."
    ),
    *_prefix(
        _M2F_LAYER + "cross_attn.", _T + "transformer_cross_attention_layers.{i}.multihead_attn."
    ),
    *_prefix(
        _M2F_LAYER + "cross_attn_layer_norm.", _T + "transformer_cross_attention_layers.{i}.norm."
    ),
    *_prefix(_M2F_LAYER + "fc1.", _T + "transformer_ffn_layers.{i}.linear1."),
    *_prefix(_M2F_LAYER + "fc2.", _T + "transformer_ffn_layers.{i}.linear2."),
    *_prefix(_M2F_LAYER + "final_layer_norm.", _T + "transformer_ffn_layers.{i}.norm."),
    *_prefix(_TM + "decoder.layernorm.", _T + "decoder_norm."),
    *_prefix(_TM + "decoder.mask_predictor.mask_embedder.{j}.0.", _T + "mask_embed.layers.{j}."),
    *_prefix(_TM + "queries_embedder.", _T + "query_embed."),
    *_prefix(_TM + "queries_features.", _T + "query_feat."),
    *_prefix(_TM + "level_embed.", _T + "level_embed."),
    *_prefix(_TM + "input_projections.", _T + "input_proj."),
    *_prefix("class_predictor.", _T + "class_embed."),
    *_prefix("criterion.empty_weight", "criterion.empty_weight"),
]

_DETR_LAYER = _TM + "decoder.layers.{i}."
_OURS_DETR_LAYER = _T + "transformer.decoder.layers.{i}."
_MASKFORMER_HEAD_RULES = [
    # BasePixelDecoder (FPN); transformers numbers the lateral levels from res4 down.
    *_prefix(_PD + "fpn.stem.0.", _P + "layer_4."),
    *_prefix(_PD + "fpn.stem.1.", _P + "layer_4.norm."),
    *_prefix(_PD + "fpn.layers.{i}.proj.0.", _P + "adapter_{3-i}."),
    *_prefix(_PD + "fpn.layers.{i}.proj.1.", _P + "adapter_{3-i}.norm."),
    *_prefix(_PD + "fpn.layers.{i}.block.0.", _P + "layer_{3-i}."),
    *_prefix(_PD + "fpn.layers.{i}.block.1.", _P + "layer_{3-i}.norm."),
    *_prefix(_PD + "mask_projection.", _P + "mask_features."),
    # StandardTransformerDecoder (DETR decoder)
    *_fused(
        tuple(_DETR_LAYER + "self_attn." + p for p in ("q_proj", "k_proj", "v_proj")),
        _OURS_DETR_LAYER + "self_attn.in_proj_{suffix}",
    ),
    *_fused(
        tuple(_DETR_LAYER + "encoder_attn." + p for p in ("q_proj", "k_proj", "v_proj")),
        _OURS_DETR_LAYER + "multihead_attn.in_proj_{suffix}",
    ),
    *_prefix(_DETR_LAYER + "self_attn.o_proj.", _OURS_DETR_LAYER + "self_attn.out_proj."),
    *_prefix(_DETR_LAYER + "encoder_attn.o_proj.", _OURS_DETR_LAYER + "multihead_attn.out_proj."),
    *_prefix(_DETR_LAYER + "self_attn_layer_norm.", _OURS_DETR_LAYER + "norm1."),
    *_prefix(_DETR_LAYER + "encoder_attn_layer_norm.", _OURS_DETR_LAYER + "norm2."),
    *_prefix(_DETR_LAYER + "final_layer_norm.", _OURS_DETR_LAYER + "norm3."),
    *_prefix(_DETR_LAYER + "mlp.fc1.", _OURS_DETR_LAYER + "linear1."),
    *_prefix(_DETR_LAYER + "mlp.fc2.", _OURS_DETR_LAYER + "linear2."),
    *[
        dataclasses.replace(r, legacy=True)
        for hf, ours in [
            ("self_attn.out_proj.", "self_attn.out_proj."),
            ("encoder_attn.out_proj.", "multihead_attn.out_proj."),
            ("fc1.", "linear1."),
            ("fc2.", "linear2."),
        ]
        for r in _prefix(_DETR_LAYER + hf, _OURS_DETR_LAYER + ours)
    ],
    *_prefix(_TM + "decoder.layernorm.", _T + "transformer.decoder.norm."),
    *_prefix(_TM + "queries_embedder.", _T + "query_embed."),
    *_prefix(_TM + "input_projection.", _T + "input_proj."),
    *_prefix("mask_embedder.{j}.0.", _T + "mask_embed.layers.{j}."),
    *_prefix("class_predictor.", _T + "class_embed."),
    *_prefix("criterion.empty_weight", "criterion.empty_weight"),
]

MASK2FORMER_RULES = {
    "swin": _SWIN_RULES + _M2F_HEAD_RULES,
    "resnet": _RESNET_RULES + _M2F_HEAD_RULES,
}
MASKFORMER_RULES = {
    "swin": _MASKFORMER_SWIN_RULES + _MASKFORMER_HEAD_RULES,
    "resnet": _RESNET_RULES + _MASKFORMER_HEAD_RULES,
}

# Keys with no counterpart: transformers' BatchNorm counters and the Swin final norm (unused
# by the backbone outputs); ours: the Swin relative position index (recomputed), which
# transformers 5.x keeps only in MaskFormer's Swin.
_HF_ONLY = re.compile(
    r"(num_batches_tracked$|^model\.pixel_level_module\.encoder\.(swin|model)\.layernorm\.)"
)
_OURS_ONLY = re.compile(r"relative_position_index$")


def _rules(model_type: str, backbone_type: str) -> list[Rule]:
    tables = {"mask2former": MASK2FORMER_RULES, "maskformer": MASKFORMER_RULES}
    if model_type not in tables:
        raise ConversionError(f"model_type {model_type!r} is not 'mask2former' or 'maskformer'")
    backbone = "swin" if backbone_type in ("swin", "maskformer-swin") else backbone_type
    if backbone not in tables[model_type]:
        raise ConversionError(
            f"backbone model_type {backbone_type!r} is not supported (swin or resnet)"
        )
    return tables[model_type][backbone]


# --------------------------------------------------------------------------- #
# State dicts
# --------------------------------------------------------------------------- #
def hf_to_ours_state_dict(
    hf_state: dict[str, torch.Tensor], model_type: str, backbone_type: str
) -> dict[str, torch.Tensor]:
    """Rename (and fuse) a ``transformers`` state dict into ours; raises on an unknown key."""
    rules = _rules(model_type, backbone_type)
    ours: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf_state.items():
        if _HF_ONLY.search(key):
            continue
        rule, target = _translate(key, rules, "hf")
        if rule.part is None:
            ours[target] = value
        else:
            parts.setdefault(target, {})[rule.part] = value
    for target, pieces in parts.items():
        if sorted(pieces) != list(range(len(pieces))) or len(pieces) != 3:
            raise ConversionError(f"{target}: expected 3 projections, found parts {sorted(pieces)}")
        ours[target] = torch.cat([pieces[i] for i in range(3)], dim=0)
    _add_relative_position_index(ours)
    return ours


def ours_to_hf_state_dict(
    state: dict[str, torch.Tensor], model_type: str, backbone_type: str
) -> dict[str, torch.Tensor]:
    """Rename (and split) our state dict into ``transformers``'; raises on an unknown key."""
    rules = _rules(model_type, backbone_type)
    hf: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _OURS_ONLY.search(key) and model_type == "mask2former":
            continue
        for rule, target in _translate_all(key, rules, "ours"):
            if rule.part is None:
                hf[target] = value
            else:
                hf[target] = value.chunk(rule.num_parts, dim=0)[rule.part].clone()
    return hf


def _translate(key: str, rules: list[Rule], side: str) -> tuple[Rule, str]:
    return _translate_all(key, rules, side)[0]


def _translate_all(key: str, rules: list[Rule], side: str) -> list[tuple[Rule, str]]:
    """The rules matching ``key`` on ``side`` ("hf" or "ours") with the translated keys.

    Part rules match whole keys: a fused tensor of ours matches one per slice. Otherwise the
    prefix rule with the longest matching template wins and the rest of the key is kept."""
    parts, prefixes = [], []
    for rule in rules:
        if rule.legacy and side == "ours":
            continue
        source, target = (rule.hf, rule.ours) if side == "hf" else (rule.ours, rule.hf)
        hit = _Template(source).match(key, whole=rule.part is not None)
        if hit is not None:
            values, rest = hit
            found = (rule, _Template(target).format(values) + rest)
            # Specificity: the longest matched text, then the fewest index fields.
            rank = (len(key) - len(rest), -len(_Template(source).fields()))
            (parts if rule.part is not None else prefixes).append((rank, found))
    if parts:
        return [found for _, found in parts]
    if not prefixes:
        raise ConversionError(f"no conversion rule for {side} key {key!r}")
    return [max(prefixes, key=lambda item: item[0])[1]]


def _add_relative_position_index(state: dict[str, torch.Tensor]) -> None:
    """Add each Swin block's ``relative_position_index`` buffer where transformers has none."""
    for key in [k for k in state if k.endswith("attn.relative_position_bias_table")]:
        index_key = key.replace("relative_position_bias_table", "relative_position_index")
        if index_key not in state:
            window = (round(len(state[key]) ** 0.5) + 1) // 2
            state[index_key] = relative_position_index(window)


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2 window - 1)^2 relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)
    # (2, w^2, 1) - (2, 1, w^2): relative (dy, dx) of every pair, shifted to start at 0.
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


# --------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------- #
# transformers' image processors normalise RGB pixels in [0, 1] with these by default.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}
_STAGES = ["stage1", "stage2", "stage3", "stage4"]
_RES = ["res2", "res3", "res4", "res5"]


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
        _mask2former_head(cfg, hf_config)
    elif model_type == "maskformer":
        _maskformer_head(cfg, hf_config)
    else:
        raise ConversionError(f"config.json: model_type {model_type!r} is not supported")
    backbone = hf_config.get("backbone_config")
    if not isinstance(backbone, dict):
        raise ConversionError(
            "config.json: needs a 'backbone_config' (timm backbones are not supported)"
        )
    _backbone(cfg, backbone)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(class_names(hf_config))
    _pixel_normalisation(cfg, preprocessor or {})
    return cfg


def _backbone(cfg: CfgNode, backbone: dict[str, Any]) -> None:
    kind = backbone.get("model_type")
    out_features = backbone.get("out_features", _STAGES)
    if list(out_features) != _STAGES:
        raise ConversionError(f"backbone_config.out_features must be {_STAGES}, got {out_features}")
    if kind in ("swin", "maskformer-swin"):
        _swin(cfg, backbone)
    elif kind == "resnet":
        _resnet(cfg, backbone)
    else:
        raise ConversionError(f"backbone_config.model_type {kind!r} is not swin or resnet")


def _swin(cfg: CfgNode, b: dict[str, Any]) -> None:
    if b.get("hidden_act", "gelu") != "gelu" or b.get("layer_norm_eps", 1e-5) != 1e-5:
        raise ConversionError("backbone_config: Swin needs hidden_act gelu, layer_norm_eps 1e-5")
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    s = cfg.MODEL.SWIN
    s.PRETRAIN_IMG_SIZE = b.get("image_size", 224)
    s.PATCH_SIZE = b.get("patch_size", 4)
    s.EMBED_DIM = b["embed_dim"]
    s.DEPTHS = list(b["depths"])
    s.NUM_HEADS = list(b["num_heads"])
    s.WINDOW_SIZE = b["window_size"]
    s.MLP_RATIO = float(b.get("mlp_ratio", 4.0))
    s.QKV_BIAS = b.get("qkv_bias", True)
    s.DROP_PATH_RATE = b.get("drop_path_rate", 0.1)
    s.APE = b.get("use_absolute_embeddings", False)
    s.OUT_FEATURES = list(_RES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0


def _resnet(cfg: CfgNode, b: dict[str, Any]) -> None:
    layer_type, depths = b.get("layer_type", "bottleneck"), tuple(b["depths"])
    if (layer_type, depths) not in _RESNET_DEPTHS:
        raise ConversionError(f"backbone_config: ResNet {layer_type} depths {depths} unsupported")
    hidden = list(b["hidden_sizes"])
    if hidden != [hidden[0] * 2**i for i in range(4)] or b.get("hidden_act", "relu") != "relu":
        raise ConversionError(f"backbone_config: hidden_sizes {hidden} must double per stage")
    if b.get("downsample_in_first_stage", False):
        raise ConversionError("backbone_config: downsample_in_first_stage is not supported")
    r = cfg.MODEL.RESNETS
    r.DEPTH = _RESNET_DEPTHS[(layer_type, depths)]
    r.STEM_OUT_CHANNELS = b.get("embedding_size", 64)
    r.RES2_OUT_CHANNELS = hidden[0]
    r.WIDTH_PER_GROUP = hidden[0] // 4 if layer_type == "bottleneck" else hidden[0]
    r.NUM_GROUPS = 1
    r.STRIDE_IN_1X1 = bool(b.get("downsample_in_bottleneck", False))
    r.STEM_TYPE = "basic"
    r.NORM = "FrozenBN"
    r.OUT_FEATURES = list(_RES)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0


def _common_head(cfg: CfgNode) -> None:
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = list(_RES)
    head.NORM = "GN"


def _mask2former_head(cfg: CfgNode, c: dict[str, Any]) -> None:
    if c.get("encoder_feedforward_dim", 1024) != 1024:
        raise ConversionError("config.json: encoder_feedforward_dim must be 1024 (published)")
    if list(c.get("feature_strides", [4, 8, 16, 32])) != [4, 8, 16, 32]:
        raise ConversionError("config.json: feature_strides must be [4, 8, 16, 32]")
    _common_head(cfg)
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.CONVS_DIM = c.get("feature_size", 256)
    head.MASK_DIM = c.get("mask_feature_size", 256)
    head.COMMON_STRIDE = c.get("common_stride", 4)
    head.TRANSFORMER_ENC_LAYERS = c.get("encoder_layers", 6)
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.IGNORE_VALUE = c.get("ignore_value", 255)
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.HIDDEN_DIM = c.get("hidden_dim", 256)
    mf.NUM_OBJECT_QUERIES = c.get("num_queries", 100)
    mf.NHEADS = c.get("num_attention_heads", 8)
    mf.DROPOUT = float(c.get("dropout", 0.0))
    mf.DIM_FEEDFORWARD = c.get("dim_feedforward", 2048)
    mf.DEC_LAYERS = c.get("decoder_layers", 10)
    mf.PRE_NORM = c.get("pre_norm", False)
    mf.ENFORCE_INPUT_PROJ = c.get("enforce_input_projection", False)
    mf.DEEP_SUPERVISION = c.get("use_auxiliary_loss", True)
    mf.NO_OBJECT_WEIGHT = c.get("no_object_weight", 0.1)
    mf.CLASS_WEIGHT = c.get("class_weight", 2.0)
    mf.MASK_WEIGHT = c.get("mask_weight", 5.0)
    mf.DICE_WEIGHT = c.get("dice_weight", 5.0)
    mf.TRAIN_NUM_POINTS = c.get("train_num_points", 12544)
    mf.OVERSAMPLE_RATIO = c.get("oversample_ratio", 3.0)
    mf.IMPORTANCE_SAMPLE_RATIO = c.get("importance_sample_ratio", 0.75)


def _maskformer_head(cfg: CfgNode, c: dict[str, Any]) -> None:
    d = c.get("decoder_config") or {}
    if d.get("model_type", "detr") != "detr":
        raise ConversionError(f"config.json: decoder_config.model_type {d.get('model_type')!r}")
    _common_head(cfg)
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"
    head.CONVS_DIM = c.get("fpn_feature_size", 256)
    head.MASK_DIM = c.get("mask_feature_size", 256)
    head.TRANSFORMER_ENC_LAYERS = 0
    mf.TRANSFORMER_DECODER_NAME = "StandardTransformerDecoder"
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.HIDDEN_DIM = d.get("d_model", 256)
    mf.NUM_OBJECT_QUERIES = d.get("num_queries", 100)
    mf.NHEADS = d.get("decoder_attention_heads", 8)
    mf.DROPOUT = float(d.get("dropout", 0.1))
    mf.DIM_FEEDFORWARD = d.get("decoder_ffn_dim", 2048)
    mf.ENC_LAYERS = 0  # transformers' MaskFormer builds no DETR encoder
    mf.DEC_LAYERS = d.get("decoder_layers", 6)
    mf.PRE_NORM = False
    mf.ENFORCE_INPUT_PROJ = True  # transformers always projects res5 to d_model
    mf.DEEP_SUPERVISION = c.get("use_auxiliary_loss", False)
    mf.NO_OBJECT_WEIGHT = c.get("no_object_weight", 0.1)
    mf.CLASS_WEIGHT = c.get("cross_entropy_weight", 1.0)
    mf.MASK_WEIGHT = c.get("mask_weight", 20.0)
    mf.DICE_WEIGHT = c.get("dice_weight", 1.0)


def _pixel_normalisation(cfg: CfgNode, preprocessor: dict[str, Any]) -> None:
    """RGB mean / std on 0-255 pixels (ImageNet by default) and the test-time resize, from the
    image processor's preprocessor_config.json."""
    scale = 255.0 if preprocessor.get("do_rescale", True) else 1.0
    mean = preprocessor.get("image_mean", _IMAGENET_MEAN)
    std = preprocessor.get("image_std", _IMAGENET_STD)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [round(m * scale, 4) for m in mean]
    cfg.MODEL.PIXEL_STD = [round(s * scale, 4) for s in std]
    size = preprocessor.get("size") or {}
    if "shortest_edge" in size:  # the processor's test-time resize
        cfg.INPUT.MIN_SIZE_TEST = size["shortest_edge"]
        cfg.INPUT.MAX_SIZE_TEST = size.get("longest_edge", cfg.INPUT.MAX_SIZE_TEST)


def cfg_to_hf_config(cfg: CfgNode, names: list[str]):
    """The ``transformers`` config (a ``Mask2FormerConfig`` or ``MaskFormerConfig``) of our
    config, with ``id2label`` from ``names``. Needs ``transformers``."""
    transformers = _import_transformers()
    if len(names) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
        raise ConversionError(
            f"{len(names)} class names for MODEL.SEM_SEG_HEAD.NUM_CLASSES = "
            f"{cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
        )
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if _is_mask2former(cfg):
        return transformers.Mask2FormerConfig(**_mask2former_kwargs(cfg, transformers), **labels)
    return transformers.MaskFormerConfig(**_maskformer_kwargs(cfg, transformers), **labels)


def _import_transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConversionError("writing a Hugging Face checkpoint needs `transformers`") from e
    return transformers


def _is_mask2former(cfg: CfgNode) -> bool:
    return cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"


def _hf_backbone_type(cfg: CfgNode) -> str:
    """The rule table's backbone name of ``cfg``: "swin", "maskformer-swin" or "resnet"."""
    name = cfg.MODEL.BACKBONE.NAME
    if name == "D2SwinTransformer":
        return "swin" if _is_mask2former(cfg) else "maskformer-swin"
    if name == "build_resnet_backbone":
        return "resnet"
    raise ConversionError(f"MODEL.BACKBONE.NAME {name!r} has no transformers counterpart")


def _hf_backbone(cfg: CfgNode, transformers):
    kind, stages = _hf_backbone_type(cfg), list(_STAGES)
    if kind == "resnet":
        r = cfg.MODEL.RESNETS
        depth = {v: k for k, v in _RESNET_DEPTHS.items()}.get(r.DEPTH)
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
            out_features=stages,
        )
    s = cfg.MODEL.SWIN
    config_class = transformers.SwinConfig if kind == "swin" else transformers.MaskFormerSwinConfig
    return config_class(
        image_size=s.PRETRAIN_IMG_SIZE,
        patch_size=s.PATCH_SIZE,
        embed_dim=s.EMBED_DIM,
        depths=list(s.DEPTHS),
        num_heads=list(s.NUM_HEADS),
        window_size=s.WINDOW_SIZE,
        mlp_ratio=s.MLP_RATIO,
        qkv_bias=s.QKV_BIAS,
        drop_path_rate=s.DROP_PATH_RATE,
        use_absolute_embeddings=s.APE,
        out_features=stages,
    )


def _mask2former_kwargs(cfg: CfgNode, transformers) -> dict[str, Any]:
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    if head.PIXEL_DECODER_NAME != "MSDeformAttnPixelDecoder":
        raise ConversionError("transformers' Mask2Former needs MSDeformAttnPixelDecoder")
    return {
        "backbone_config": _hf_backbone(cfg, transformers),
        "feature_size": head.CONVS_DIM,
        "mask_feature_size": head.MASK_DIM,
        "hidden_dim": mf.HIDDEN_DIM,
        "encoder_feedforward_dim": 1024,
        "encoder_layers": head.TRANSFORMER_ENC_LAYERS,
        "decoder_layers": mf.DEC_LAYERS,
        "num_attention_heads": mf.NHEADS,
        "dropout": mf.DROPOUT,
        "dim_feedforward": mf.DIM_FEEDFORWARD,
        "pre_norm": mf.PRE_NORM,
        "enforce_input_projection": mf.ENFORCE_INPUT_PROJ,
        "common_stride": head.COMMON_STRIDE,
        "ignore_value": head.IGNORE_VALUE,
        "num_queries": mf.NUM_OBJECT_QUERIES,
        "no_object_weight": mf.NO_OBJECT_WEIGHT,
        "class_weight": mf.CLASS_WEIGHT,
        "mask_weight": mf.MASK_WEIGHT,
        "dice_weight": mf.DICE_WEIGHT,
        "train_num_points": mf.TRAIN_NUM_POINTS,
        "oversample_ratio": mf.OVERSAMPLE_RATIO,
        "importance_sample_ratio": mf.IMPORTANCE_SAMPLE_RATIO,
        "use_auxiliary_loss": mf.DEEP_SUPERVISION,
    }


def _maskformer_kwargs(cfg: CfgNode, transformers) -> dict[str, Any]:
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    if head.PIXEL_DECODER_NAME != "BasePixelDecoder" or mf.ENC_LAYERS != 0 or mf.PRE_NORM:
        raise ConversionError(
            "transformers' MaskFormer needs BasePixelDecoder, MASK_FORMER.ENC_LAYERS 0 and "
            "PRE_NORM False"
        )
    backbone = _hf_backbone(cfg, transformers)
    decoder = transformers.DetrConfig(
        d_model=mf.HIDDEN_DIM,
        encoder_layers=0,
        decoder_layers=mf.DEC_LAYERS,
        decoder_ffn_dim=mf.DIM_FEEDFORWARD,
        decoder_attention_heads=mf.NHEADS,
        num_queries=mf.NUM_OBJECT_QUERIES,
        dropout=mf.DROPOUT,
        use_timm_backbone=False,
        backbone_config=backbone,
    )
    return {
        "backbone_config": backbone,
        "decoder_config": decoder,
        "fpn_feature_size": head.CONVS_DIM,
        "mask_feature_size": head.MASK_DIM,
        "no_object_weight": mf.NO_OBJECT_WEIGHT,
        "cross_entropy_weight": mf.CLASS_WEIGHT,
        "mask_weight": mf.MASK_WEIGHT,
        "dice_weight": mf.DICE_WEIGHT,
        "use_auxiliary_loss": mf.DEEP_SUPERVISION,
    }


# --------------------------------------------------------------------------- #
# Directories and files
# --------------------------------------------------------------------------- #
WEIGHTS_NAME = "model_final.safetensors"
CONFIG_NAME = "config.yaml"


def convert_hf_to_ours(hf_dir: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """A ``transformers`` model directory (config.json + model.safetensors) -> ``out_dir``
    with our ``config.yaml`` (MODEL.WEIGHTS pointing at the weights) and
    ``model_final.safetensors`` (class names in its metadata, key "class_names", JSON).

    Returns (config path, weights path).
    """
    from safetensors.torch import load_file

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf_config = _read_json(hf_dir / "config.json")
    preprocessor_file = hf_dir / "preprocessor_config.json"
    preprocessor = _read_json(preprocessor_file) if preprocessor_file.is_file() else None
    weights_file = hf_dir / "model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{weights_file}: not found (only safetensors weights are read)")
    cfg = hf_config_to_cfg(hf_config, preprocessor)
    state = hf_to_ours_state_dict(
        load_file(str(weights_file)),
        hf_config["model_type"],
        hf_config["backbone_config"]["model_type"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_out, config_out = out_dir / WEIGHTS_NAME, out_dir / CONFIG_NAME
    metadata = {"class_names": json.dumps(class_names(hf_config)), "source": str(hf_dir)}
    _save_safetensors(state, weights_out, metadata)
    cfg.MODEL.WEIGHTS = str(weights_out.resolve())
    _write_text(config_out, cfg.dump())
    logger.info("converted %s -> %s, %s", hf_dir, config_out, weights_out)
    return config_out, weights_out


def convert_ours_to_hf(
    config_file: str | Path,
    weights_file: str | Path,
    out_dir: str | Path,
    names: list[str] | None = None,
) -> Path:
    """Our YAML config + weights -> a ``transformers`` model directory written by
    ``save_pretrained``. Class names come from ``names``, else from the weights' metadata.

    The weights are loaded into the ``transformers`` model, which must then have every
    parameter; returns ``out_dir``.
    """
    transformers = _import_transformers()
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    state, metadata = read_weights(weights_file)
    if names is None:
        if "class_names" not in metadata:
            raise ConversionError(f"{weights_file}: no class names in its metadata; pass names")
        names = json.loads(metadata["class_names"])
    hf_config = cfg_to_hf_config(cfg, names)
    model_class = (
        transformers.Mask2FormerForUniversalSegmentation
        if _is_mask2former(cfg)
        else transformers.MaskFormerForInstanceSegmentation
    )
    model = model_class(hf_config)
    hf_state = ours_to_hf_state_dict(state, hf_config.model_type, _hf_backbone_type(cfg))
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    # Parameters with no counterpart in ours keep transformers' initial values.
    missing = [k for k in missing if not _HF_ONLY.search(k)]
    if missing or unexpected:
        raise ConversionError(
            f"{weights_file}: does not fit the transformers model: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}"
        )
    model.save_pretrained(str(out_dir))
    logger.info("converted %s + %s -> %s", config_file, weights_file, out_dir)
    return Path(out_dir)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A flat state dict (any format :func:`read_checkpoint` reads) and, for
    ``.safetensors``, the file's metadata (else empty)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: weights file not found")
    state = read_checkpoint(str(path))["model"]
    if path.suffix != ".safetensors":
        return state, {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return state, dict(f.metadata() or {})


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]):
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
