"""Key renames between ``transformers``' Mask2Former / MaskFormer state dicts and ours.

Each direction has an ordered list of ``(pattern, replacement)`` rules per model and backbone
(:data:`TO_OURS`, :data:`TO_HF`). The first pattern that matches the start of a key
(``re.match``) renames the matched part and the rest of the key is kept. A replacement is

- a string, expanded as ``re.Match.expand`` does (``\\1``, ``\\g<name>``);
- a function of the match, where the two sides number layers differently;
- ``None``: the key has no counterpart on the other side and is dropped;
- a tuple of three strings (towards ``transformers`` only): the tensor is one of our fused
  attention projections, cut along dim 0 into query, key and value, in that order.

Towards ours, the three projections match a pattern with a group named ``part`` (``q``,
``k``, ``v`` or ``query``, ``key``, ``value``) and are concatenated in that order.
"""

from __future__ import annotations

import re
from typing import Callable, Union

from .errors import ConversionError

__all__ = ["PART_INDEX", "TO_HF", "TO_OURS", "Rule", "dropped", "first_rule", "rename", "rules"]

Replacement = Union[str, Callable[[re.Match], str], tuple[str, ...], None]
Rule = tuple[re.Pattern, Replacement]

#: Slice of our fused projection that each separate ``transformers`` projection fills.
PART_INDEX = {"q": 0, "k": 1, "v": 2, "query": 0, "key": 1, "value": 2}

# Key prefixes as text (in replacements) and as patterns.
ENC = "model.pixel_level_module.encoder."
PD = "model.pixel_level_module.decoder."
TM = "model.transformer_module."
P = "sem_seg_head.pixel_decoder."
T = "sem_seg_head.predictor."
ENC_RE, PD_RE, TM_RE, P_RE, T_RE = map(re.escape, (ENC, PD, TM, P, T))

# One of the separate attention projections of transformers (in memory / in Swin files).
QKV_RE = r"(?P<part>q|k|v)_proj\.(?P<param>weight|bias)$"
QUERY_KEY_VALUE_RE = r"(?P<part>query|key|value)\.(?P<param>weight|bias)$"
# Our fused projection (nn.MultiheadAttention's in_proj_*, Swin's qkv).
IN_PROJ_RE = r"in_proj_(?P<param>weight|bias)$"

# --------------------------------------------------------------------------- #
# Backbones
# --------------------------------------------------------------------------- #
# transformers' ResNetBackbone <-> detectron2's ResNet (BatchNorm <-> FrozenBatchNorm2d).
# transformers numbers the stages from 0 and the convolutions of a block from 0; ours has
# res2..res5 and conv1..conv3.
HF_BLOCK_RE = ENC_RE + r"encoder\.stages\.([0-3])\.layers\.(\d+)\."
OURS_BLOCK_RE = r"backbone\.res([2-5])\.(\d+)\."


def _ours_block(m: re.Match) -> str:
    return f"backbone.res{int(m[1]) + 2}.{m[2]}."


def _hf_block(m: re.Match) -> str:
    return f"{ENC}encoder.stages.{int(m[1]) - 2}.layers.{m[2]}."


RESNET_TO_OURS = [
    (r".*num_batches_tracked$", None),  # BatchNorm's counter; ours is frozen
    (ENC_RE + r"embedder\.embedder\.convolution\.", "backbone.stem.conv1."),
    (ENC_RE + r"embedder\.embedder\.normalization\.", "backbone.stem.conv1.norm."),
    (HF_BLOCK_RE + r"shortcut\.convolution\.", lambda m: _ours_block(m) + "shortcut."),
    (HF_BLOCK_RE + r"shortcut\.normalization\.", lambda m: _ours_block(m) + "shortcut.norm."),
    (
        HF_BLOCK_RE + r"layer\.([0-2])\.convolution\.",
        lambda m: _ours_block(m) + f"conv{int(m[3]) + 1}.",
    ),
    (
        HF_BLOCK_RE + r"layer\.([0-2])\.normalization\.",
        lambda m: _ours_block(m) + f"conv{int(m[3]) + 1}.norm.",
    ),
]
RESNET_TO_HF = [
    (r"backbone\.stem\.conv1\.norm\.", ENC + "embedder.embedder.normalization."),
    (r"backbone\.stem\.conv1\.", ENC + "embedder.embedder.convolution."),
    (OURS_BLOCK_RE + r"shortcut\.norm\.", lambda m: _hf_block(m) + "shortcut.normalization."),
    (OURS_BLOCK_RE + r"shortcut\.", lambda m: _hf_block(m) + "shortcut.convolution."),
    (
        OURS_BLOCK_RE + r"conv([1-3])\.norm\.",
        lambda m: _hf_block(m) + f"layer.{int(m[3]) - 1}.normalization.",
    ),
    (
        OURS_BLOCK_RE + r"conv([1-3])\.",
        lambda m: _hf_block(m) + f"layer.{int(m[3]) - 1}.convolution.",
    ),
]

# transformers' SwinBackbone (Mask2Former) and MaskFormerSwinBackbone (MaskFormer) <-> the
# published D2SwinTransformer. transformers numbers the per-stage norms from 1 in the first.
OURS_SWIN_BLOCK_RE = r"backbone\.layers\.(\d+)\.blocks\.(\d+)\."
OURS_SWIN_BLOCK = r"backbone.layers.\1.blocks.\2."
SWIN = ENC + "swin."  # SwinBackbone as transformers 5.x holds it in memory
SWIN_BLOCK = SWIN + r"encoder.layers.\1.blocks.\2."
SWIN_RE = re.escape(SWIN)
SWIN_BLOCK_RE = SWIN_RE + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
MASKFORMER_SWIN = ENC + "model."
MASKFORMER_SWIN_RE = re.escape(MASKFORMER_SWIN)
MASKFORMER_SWIN_BLOCK = MASKFORMER_SWIN + r"encoder.layers.\1.blocks.\2."


def _swin_blocks_to_ours(root: str) -> list:
    """Swin named ``attention.self.query`` ... ``output.dense`` under the pattern ``root``:
    transformers' MaskFormerSwinBackbone, and the layout ``save_pretrained`` writes (and the
    published checkpoints use) for its SwinBackbone."""
    block = root + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
    return [
        (
            block + r"attention\.self\." + QUERY_KEY_VALUE_RE,
            OURS_SWIN_BLOCK + r"attn.qkv.\g<param>",
        ),
        (root + r"embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
        (root + r"embeddings\.norm\.", "backbone.patch_embed.norm."),
        (block + r"attention\.self\.relative_", OURS_SWIN_BLOCK + "attn.relative_"),
        (block + r"attention\.output\.dense\.", OURS_SWIN_BLOCK + "attn.proj."),
        (block + r"layernorm_before\.", OURS_SWIN_BLOCK + "norm1."),
        (block + r"layernorm_after\.", OURS_SWIN_BLOCK + "norm2."),
        (block + r"intermediate\.dense\.", OURS_SWIN_BLOCK + "mlp.fc1."),
        (block + r"output\.dense\.", OURS_SWIN_BLOCK + "mlp.fc2."),
        (root + r"encoder\.layers\.(\d+)\.downsample\.", r"backbone.layers.\1.downsample."),
    ]


SWIN_TO_OURS = [
    (SWIN_RE + r"layernorm\.", None),  # the final norm, unused by the backbone's outputs
    (SWIN_BLOCK_RE + r"attention\." + QKV_RE, OURS_SWIN_BLOCK + r"attn.qkv.\g<param>"),
    (SWIN_RE + r"embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (SWIN_RE + r"embeddings\.norm\.", "backbone.patch_embed.norm."),
    (
        SWIN_BLOCK_RE + r"attention\.relative_position_bias\.relative_position_bias_table",
        OURS_SWIN_BLOCK + "attn.relative_position_bias_table",
    ),
    (SWIN_BLOCK_RE + r"attention\.o_proj\.", OURS_SWIN_BLOCK + "attn.proj."),
    (SWIN_BLOCK_RE + r"layernorm_before\.", OURS_SWIN_BLOCK + "norm1."),
    (SWIN_BLOCK_RE + r"layernorm_after\.", OURS_SWIN_BLOCK + "norm2."),
    (SWIN_BLOCK_RE + r"mlp\.", OURS_SWIN_BLOCK + "mlp."),
    (SWIN_RE + r"encoder\.layers\.(\d+)\.downsample\.", r"backbone.layers.\1.downsample."),
    (ENC_RE + r"hidden_states_norms\.stage([1-4])\.", lambda m: f"backbone.norm{int(m[1]) - 1}."),
    *_swin_blocks_to_ours(ENC_RE),
]
SWIN_TO_HF = [
    (
        OURS_SWIN_BLOCK_RE + r"attn\.qkv\.(?P<param>weight|bias)$",
        tuple(SWIN_BLOCK + rf"attention.{p}_proj.\g<param>" for p in "qkv"),
    ),
    (r"backbone\.patch_embed\.proj\.", SWIN + "embeddings.patch_embeddings.projection."),
    (r"backbone\.patch_embed\.norm\.", SWIN + "embeddings.norm."),
    (
        OURS_SWIN_BLOCK_RE + r"attn\.relative_position_bias_table",
        SWIN_BLOCK + "attention.relative_position_bias.relative_position_bias_table",
    ),
    (OURS_SWIN_BLOCK_RE + r"attn\.relative_position_index$", None),  # transformers recomputes it
    (OURS_SWIN_BLOCK_RE + r"attn\.proj\.", SWIN_BLOCK + "attention.o_proj."),
    (OURS_SWIN_BLOCK_RE + r"norm1\.", SWIN_BLOCK + "layernorm_before."),
    (OURS_SWIN_BLOCK_RE + r"norm2\.", SWIN_BLOCK + "layernorm_after."),
    (OURS_SWIN_BLOCK_RE + r"mlp\.", SWIN_BLOCK + "mlp."),
    (r"backbone\.layers\.(\d+)\.downsample\.", SWIN + r"encoder.layers.\1.downsample."),
    (r"backbone\.norm([0-3])\.", lambda m: f"{ENC}hidden_states_norms.stage{int(m[1]) + 1}."),
]
MASKFORMER_SWIN_TO_OURS = [
    (MASKFORMER_SWIN_RE + r"layernorm\.", None),  # as in SwinBackbone
    *_swin_blocks_to_ours(MASKFORMER_SWIN_RE),
    (ENC_RE + r"hidden_states_norms\.(\d+)\.", r"backbone.norm\1."),
]
MASKFORMER_SWIN_TO_HF = [
    (
        OURS_SWIN_BLOCK_RE + r"attn\.qkv\.(?P<param>weight|bias)$",
        tuple(
            MASKFORMER_SWIN_BLOCK + rf"attention.self.{p}.\g<param>"
            for p in ("query", "key", "value")
        ),
    ),
    (r"backbone\.patch_embed\.proj\.", MASKFORMER_SWIN + "embeddings.patch_embeddings.projection."),
    (r"backbone\.patch_embed\.norm\.", MASKFORMER_SWIN + "embeddings.norm."),
    (OURS_SWIN_BLOCK_RE + r"attn\.relative_", MASKFORMER_SWIN_BLOCK + "attention.self.relative_"),
    (OURS_SWIN_BLOCK_RE + r"attn\.proj\.", MASKFORMER_SWIN_BLOCK + "attention.output.dense."),
    (OURS_SWIN_BLOCK_RE + r"norm1\.", MASKFORMER_SWIN_BLOCK + "layernorm_before."),
    (OURS_SWIN_BLOCK_RE + r"norm2\.", MASKFORMER_SWIN_BLOCK + "layernorm_after."),
    (OURS_SWIN_BLOCK_RE + r"mlp\.fc1\.", MASKFORMER_SWIN_BLOCK + "intermediate.dense."),
    (OURS_SWIN_BLOCK_RE + r"mlp\.fc2\.", MASKFORMER_SWIN_BLOCK + "output.dense."),
    (r"backbone\.layers\.(\d+)\.downsample\.", MASKFORMER_SWIN + r"encoder.layers.\1.downsample."),
    (r"backbone\.norm(\d+)\.", ENC + r"hidden_states_norms.\1."),
]

# --------------------------------------------------------------------------- #
# Heads
# --------------------------------------------------------------------------- #
HF_DECODER_LAYER_RE = TM_RE + r"decoder\.layers\.(\d+)\."
HF_DECODER_LAYER = TM + r"decoder.layers.\1."

# Mask2Former: MSDeformAttnPixelDecoder and MultiScaleMaskedTransformerDecoder.
HF_ENCODER_LAYER_RE = PD_RE + r"encoder\.layers\.(\d+)\."
HF_ENCODER_LAYER = PD + r"encoder.layers.\1."
OURS_ENCODER_LAYER_RE = P_RE + r"transformer\.encoder\.layers\.(\d+)\."
OURS_ENCODER_LAYER = P + r"transformer.encoder.layers.\1."
SELF_ATTENTION = T + r"transformer_self_attention_layers.\1."
SELF_ATTENTION_RE = T_RE + r"transformer_self_attention_layers\.(\d+)\."
CROSS_ATTENTION = T + r"transformer_cross_attention_layers.\1."
CROSS_ATTENTION_RE = T_RE + r"transformer_cross_attention_layers\.(\d+)\."
FFN = T + r"transformer_ffn_layers.\1."
FFN_RE = T_RE + r"transformer_ffn_layers\.(\d+)\."

MASK2FORMER_HEAD_TO_OURS = [
    (PD_RE + r"input_projections\.", P + "input_proj."),
    (PD_RE + r"level_embed", P + "transformer.level_embed"),
    (HF_ENCODER_LAYER_RE + r"self_attn\.", OURS_ENCODER_LAYER + "self_attn."),
    (HF_ENCODER_LAYER_RE + r"self_attn_layer_norm\.", OURS_ENCODER_LAYER + "norm1."),
    (HF_ENCODER_LAYER_RE + r"fc1\.", OURS_ENCODER_LAYER + "linear1."),
    (HF_ENCODER_LAYER_RE + r"fc2\.", OURS_ENCODER_LAYER + "linear2."),
    (HF_ENCODER_LAYER_RE + r"final_layer_norm\.", OURS_ENCODER_LAYER + "norm2."),
    (PD_RE + r"mask_projection\.", P + "mask_features."),
    (PD_RE + r"(adapter|layer)_(\d+)\.0\.", P + r"\1_\2."),
    (PD_RE + r"(adapter|layer)_(\d+)\.1\.", P + r"\1_\2.norm."),
    (
        HF_DECODER_LAYER_RE + r"self_attn\." + QKV_RE,
        SELF_ATTENTION + r"self_attn.in_proj_\g<param>",
    ),
    (HF_DECODER_LAYER_RE + r"self_attn\.out_proj\.", SELF_ATTENTION + "self_attn.out_proj."),
    (HF_DECODER_LAYER_RE + r"self_attn_layer_norm\.", SELF_ATTENTION + "norm."),
    (HF_DECODER_LAYER_RE + r"cross_attn\.", CROSS_ATTENTION + "multihead_attn."),
    (HF_DECODER_LAYER_RE + r"cross_attn_layer_norm\.", CROSS_ATTENTION + "norm."),
    (HF_DECODER_LAYER_RE + r"fc1\.", FFN + "linear1."),
    (HF_DECODER_LAYER_RE + r"fc2\.", FFN + "linear2."),
    (HF_DECODER_LAYER_RE + r"final_layer_norm\.", FFN + "norm."),
    (TM_RE + r"decoder\.layernorm\.", T + "decoder_norm."),
    (TM_RE + r"decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.", T + r"mask_embed.layers.\1."),
    (TM_RE + r"queries_embedder\.", T + "query_embed."),
    (TM_RE + r"queries_features\.", T + "query_feat."),
    (TM_RE + r"level_embed\.", T + "level_embed."),
    (TM_RE + r"input_projections\.", T + "input_proj."),
    (r"class_predictor\.", T + "class_embed."),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]
MASK2FORMER_HEAD_TO_HF = [
    (P_RE + r"input_proj\.", PD + "input_projections."),
    (P_RE + r"transformer\.level_embed", PD + "level_embed"),
    (OURS_ENCODER_LAYER_RE + r"self_attn\.", HF_ENCODER_LAYER + "self_attn."),
    (OURS_ENCODER_LAYER_RE + r"norm1\.", HF_ENCODER_LAYER + "self_attn_layer_norm."),
    (OURS_ENCODER_LAYER_RE + r"linear1\.", HF_ENCODER_LAYER + "fc1."),
    (OURS_ENCODER_LAYER_RE + r"linear2\.", HF_ENCODER_LAYER + "fc2."),
    (OURS_ENCODER_LAYER_RE + r"norm2\.", HF_ENCODER_LAYER + "final_layer_norm."),
    (P_RE + r"mask_features\.", PD + "mask_projection."),
    (P_RE + r"(adapter|layer)_(\d+)\.norm\.", PD + r"\1_\2.1."),
    (P_RE + r"(adapter|layer)_(\d+)\.", PD + r"\1_\2.0."),
    (
        SELF_ATTENTION_RE + r"self_attn\." + IN_PROJ_RE,
        tuple(HF_DECODER_LAYER + rf"self_attn.{p}_proj.\g<param>" for p in "qkv"),
    ),
    (SELF_ATTENTION_RE + r"self_attn\.out_proj\.", HF_DECODER_LAYER + "self_attn.out_proj."),
    (SELF_ATTENTION_RE + r"norm\.", HF_DECODER_LAYER + "self_attn_layer_norm."),
    (CROSS_ATTENTION_RE + r"multihead_attn\.", HF_DECODER_LAYER + "cross_attn."),
    (CROSS_ATTENTION_RE + r"norm\.", HF_DECODER_LAYER + "cross_attn_layer_norm."),
    (FFN_RE + r"linear1\.", HF_DECODER_LAYER + "fc1."),
    (FFN_RE + r"linear2\.", HF_DECODER_LAYER + "fc2."),
    (FFN_RE + r"norm\.", HF_DECODER_LAYER + "final_layer_norm."),
    (T_RE + r"decoder_norm\.", TM + "decoder.layernorm."),
    (T_RE + r"mask_embed\.layers\.(\d+)\.", TM + r"decoder.mask_predictor.mask_embedder.\1.0."),
    (T_RE + r"query_embed\.", TM + "queries_embedder."),
    (T_RE + r"query_feat\.", TM + "queries_features."),
    (T_RE + r"level_embed\.", TM + "level_embed."),
    (T_RE + r"input_proj\.", TM + "input_projections."),
    (T_RE + r"class_embed\.", "class_predictor."),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]

# MaskFormer: BasePixelDecoder (an FPN) and StandardTransformerDecoder (DETR's decoder).
# transformers numbers the FPN's lateral levels 0..2 from res4 down; ours 3..1.
OURS_DETR_LAYER = T + r"transformer.decoder.layers.\1."
OURS_DETR_LAYER_RE = T_RE + r"transformer\.decoder\.layers\.(\d+)\."


def _ours_fpn(m: re.Match) -> str:
    return f"{P}{'adapter' if m[2] == 'proj' else 'layer'}_{3 - int(m[1])}."


def _hf_fpn(m: re.Match) -> str:
    return f"{PD}fpn.layers.{3 - int(m[2])}.{'proj' if m[1] == 'adapter' else 'block'}."


MASKFORMER_HEAD_TO_OURS = [
    (PD_RE + r"fpn\.stem\.0\.", P + "layer_4."),
    (PD_RE + r"fpn\.stem\.1\.", P + "layer_4.norm."),
    (PD_RE + r"fpn\.layers\.([0-2])\.(proj|block)\.0\.", _ours_fpn),
    (PD_RE + r"fpn\.layers\.([0-2])\.(proj|block)\.1\.", lambda m: _ours_fpn(m) + "norm."),
    (PD_RE + r"mask_projection\.", P + "mask_features."),
    (
        HF_DECODER_LAYER_RE + r"self_attn\." + QKV_RE,
        OURS_DETR_LAYER + r"self_attn.in_proj_\g<param>",
    ),
    (
        HF_DECODER_LAYER_RE + r"encoder_attn\." + QKV_RE,
        OURS_DETR_LAYER + r"multihead_attn.in_proj_\g<param>",
    ),
    # o_proj and mlp.fc1 in memory; out_proj and fc1 in the files save_pretrained writes.
    (HF_DECODER_LAYER_RE + r"self_attn\.(?:o|out)_proj\.", OURS_DETR_LAYER + "self_attn.out_proj."),
    (
        HF_DECODER_LAYER_RE + r"encoder_attn\.(?:o|out)_proj\.",
        OURS_DETR_LAYER + "multihead_attn.out_proj.",
    ),
    (HF_DECODER_LAYER_RE + r"self_attn_layer_norm\.", OURS_DETR_LAYER + "norm1."),
    (HF_DECODER_LAYER_RE + r"encoder_attn_layer_norm\.", OURS_DETR_LAYER + "norm2."),
    (HF_DECODER_LAYER_RE + r"final_layer_norm\.", OURS_DETR_LAYER + "norm3."),
    (HF_DECODER_LAYER_RE + r"(?:mlp\.)?fc1\.", OURS_DETR_LAYER + "linear1."),
    (HF_DECODER_LAYER_RE + r"(?:mlp\.)?fc2\.", OURS_DETR_LAYER + "linear2."),
    (TM_RE + r"decoder\.layernorm\.", T + "transformer.decoder.norm."),
    (TM_RE + r"queries_embedder\.", T + "query_embed."),
    (TM_RE + r"input_projection\.", T + "input_proj."),
    (r"mask_embedder\.(\d+)\.0\.", T + r"mask_embed.layers.\1."),
    (r"class_predictor\.", T + "class_embed."),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]
MASKFORMER_HEAD_TO_HF = [
    (P_RE + r"layer_4\.norm\.", PD + "fpn.stem.1."),
    (P_RE + r"layer_4\.", PD + "fpn.stem.0."),
    (P_RE + r"(adapter|layer)_([1-3])\.norm\.", lambda m: _hf_fpn(m) + "1."),
    (P_RE + r"(adapter|layer)_([1-3])\.", lambda m: _hf_fpn(m) + "0."),
    (P_RE + r"mask_features\.", PD + "mask_projection."),
    (
        OURS_DETR_LAYER_RE + r"self_attn\." + IN_PROJ_RE,
        tuple(HF_DECODER_LAYER + rf"self_attn.{p}_proj.\g<param>" for p in "qkv"),
    ),
    (
        OURS_DETR_LAYER_RE + r"multihead_attn\." + IN_PROJ_RE,
        tuple(HF_DECODER_LAYER + rf"encoder_attn.{p}_proj.\g<param>" for p in "qkv"),
    ),
    (OURS_DETR_LAYER_RE + r"self_attn\.out_proj\.", HF_DECODER_LAYER + "self_attn.o_proj."),
    (OURS_DETR_LAYER_RE + r"multihead_attn\.out_proj\.", HF_DECODER_LAYER + "encoder_attn.o_proj."),
    (OURS_DETR_LAYER_RE + r"norm1\.", HF_DECODER_LAYER + "self_attn_layer_norm."),
    (OURS_DETR_LAYER_RE + r"norm2\.", HF_DECODER_LAYER + "encoder_attn_layer_norm."),
    (OURS_DETR_LAYER_RE + r"norm3\.", HF_DECODER_LAYER + "final_layer_norm."),
    (OURS_DETR_LAYER_RE + r"linear1\.", HF_DECODER_LAYER + "mlp.fc1."),
    (OURS_DETR_LAYER_RE + r"linear2\.", HF_DECODER_LAYER + "mlp.fc2."),
    (T_RE + r"transformer\.decoder\.norm\.", TM + "decoder.layernorm."),
    (T_RE + r"query_embed\.", TM + "queries_embedder."),
    (T_RE + r"input_proj\.", TM + "input_projection."),
    (T_RE + r"mask_embed\.layers\.(\d+)\.", r"mask_embedder.\1.0."),
    (T_RE + r"class_embed\.", "class_predictor."),
    (r"criterion\.empty_weight", "criterion.empty_weight"),
]


# --------------------------------------------------------------------------- #
# Tables and their use
# --------------------------------------------------------------------------- #
def _compiled(*tables: list) -> list[Rule]:
    return [
        (re.compile(pattern), replacement) for table in tables for pattern, replacement in table
    ]


#: Rules by (transformers model_type, backbone): "swin" stands for the Swin of that model.
TO_OURS: dict[tuple[str, str], list[Rule]] = {
    ("mask2former", "swin"): _compiled(SWIN_TO_OURS, MASK2FORMER_HEAD_TO_OURS),
    ("mask2former", "resnet"): _compiled(RESNET_TO_OURS, MASK2FORMER_HEAD_TO_OURS),
    ("maskformer", "swin"): _compiled(MASKFORMER_SWIN_TO_OURS, MASKFORMER_HEAD_TO_OURS),
    ("maskformer", "resnet"): _compiled(RESNET_TO_OURS, MASKFORMER_HEAD_TO_OURS),
}
TO_HF: dict[tuple[str, str], list[Rule]] = {
    ("mask2former", "swin"): _compiled(SWIN_TO_HF, MASK2FORMER_HEAD_TO_HF),
    ("mask2former", "resnet"): _compiled(RESNET_TO_HF, MASK2FORMER_HEAD_TO_HF),
    ("maskformer", "swin"): _compiled(MASKFORMER_SWIN_TO_HF, MASKFORMER_HEAD_TO_HF),
    ("maskformer", "resnet"): _compiled(RESNET_TO_HF, MASKFORMER_HEAD_TO_HF),
}


def rules(
    table: dict[tuple[str, str], list[Rule]], model_type: str, backbone_type: str
) -> list[Rule]:
    """The rules of ``table`` for transformers' ``model_type`` and backbone ``model_type``."""
    if model_type not in ("mask2former", "maskformer"):
        raise ConversionError(f"model_type {model_type!r} is not 'mask2former' or 'maskformer'")
    backbone = "swin" if backbone_type in ("swin", "maskformer-swin") else backbone_type
    if (model_type, backbone) not in table:
        raise ConversionError(
            f"backbone model_type {backbone_type!r} is not supported (swin or resnet)"
        )
    return table[model_type, backbone]


def first_rule(key: str, rules: list[Rule]) -> tuple[re.Match, Replacement] | None:
    """The match and replacement of the first rule whose pattern matches the start of ``key``."""
    for pattern, replacement in rules:
        m = pattern.match(key)
        if m is not None:
            return m, replacement
    return None


def rename(key: str, rules: list[Rule], side: str) -> tuple[re.Match, str | tuple[str, ...] | None]:
    """``key`` (of ``side``: "hf" or "ours") renamed by the first rule that matches it: the
    match and the new key, the three keys of a fused projection, or None (key dropped)."""
    found = first_rule(key, rules)
    if found is None:
        raise ConversionError(f"no conversion rule for {side} key {key!r}")
    m, replacement = found
    rest = key[m.end() :]
    if replacement is None:
        return m, None
    if callable(replacement):
        return m, replacement(m) + rest
    if isinstance(replacement, tuple):
        return m, tuple(m.expand(r) + rest for r in replacement)
    return m, m.expand(replacement) + rest


def dropped(key: str, rules: list[Rule]) -> bool:
    """Whether the first rule matching ``key`` drops it (False where none matches)."""
    found = first_rule(key, rules)
    return found is not None and found[1] is None
