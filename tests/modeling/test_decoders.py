"""Pixel decoders and transformer decoders of the tiny models: levels, shapes, predictions."""

import pytest
import torch

from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    attention_mask_from_masks,
)
from tests.modeling.tiny import NUM_CLASSES, build_tiny_model, make_image

HIDDEN = 32  # tiny.py: CONVS_DIM = MASK_DIM = HIDDEN_DIM = 32


def features_of(model, height=64, width=96):
    x = (make_image(height, width)[None] - model.pixel_mean) / model.pixel_std
    return model.backbone(x)


@pytest.mark.parametrize(
    "name, has_encoder_features",
    [("mask2former", True), ("maskformer_fpn", False), ("maskformer_encoder", True)],
)
def test_pixel_decoder_levels(name, has_encoder_features):
    model = build_tiny_model(name)
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = (
            model.sem_seg_head.pixel_decoder.forward_features(features_of(model))
        )
    assert mask_features.shape == (1, HIDDEN, 16, 24)  # stride 4
    # 1/32, 1/16, 1/8 in that order
    assert [tuple(f.shape) for f in multi_scale] == [
        (1, HIDDEN, 2, 3),
        (1, HIDDEN, 4, 6),
        (1, HIDDEN, 8, 12),
    ]
    assert (encoder_features is not None) == has_encoder_features
    if has_encoder_features:
        assert encoder_features.shape == (1, HIDDEN, 2, 3)


def test_msdeformattn_pixel_decoder_structure():
    decoder = build_tiny_model("mask2former").sem_seg_head.pixel_decoder
    assert decoder.transformer_in_features == ["res3", "res4", "res5"]
    assert decoder.num_fpn_levels == 1  # res2 only: stride 8 down to the common stride 4
    assert [p[0].in_channels for p in decoder.input_proj] == [512, 256, 128]  # res5 first (R18)
    assert all(isinstance(p[1], torch.nn.GroupNorm) for p in decoder.input_proj)
    assert decoder.transformer.level_embed.shape == (3, HIDDEN)


@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("name, layers", [("mask2former", 2), ("maskformer_fpn", 2)])
def test_transformer_decoder_predictions(name, layers, deep_supervision):
    model = build_tiny_model(name, deep_supervision)
    with torch.no_grad():
        out = model.sem_seg_head(features_of(model))
    assert out["pred_logits"].shape == (1, 6, NUM_CLASSES + 1)
    assert out["pred_masks"].shape == (1, 6, 16, 24)
    if not deep_supervision and name != "mask2former":
        assert "aux_outputs" not in out
        return
    # The official Mask2Former decoder returns its earlier predictions whatever
    # DEEP_SUPERVISION says (mask2former_transformer_decoder.py forward, 'aux_outputs').
    # Mask2Former also predicts from the learned queries before the first layer.
    num_aux = layers if name == "mask2former" else layers - 1
    assert len(out["aux_outputs"]) == num_aux
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == out["pred_logits"].shape
        assert aux["pred_masks"].shape == out["pred_masks"].shape
        assert not torch.equal(aux["pred_masks"], out["pred_masks"])


def test_masked_cross_attention_ignores_keys_outside_the_predicted_mask():
    """Query 0's first masked cross-attention sees only its predicted foreground: changing the
    level-0 memory elsewhere leaves it unchanged, changing it inside does not. (The other
    queries' masks are all background, so they attend everywhere.)"""
    predictor = build_tiny_model("mask2former").sem_seg_head.predictor
    torch.manual_seed(0)
    level0 = torch.randn(1, HIDDEN, 2, 2)
    others = [torch.randn(1, HIDDEN, 4, 4), torch.randn(1, HIDDEN, 8, 8)]
    mask_logits = torch.full((1, 6, 8, 8), -10.0)
    mask_logits[0, 0, :4, :4] = 10.0  # query 0: the top-left level-0 pixel
    attn_mask = attention_mask_from_masks(mask_logits, (2, 2), predictor.num_heads)
    queries = predictor.query_feat.weight[:, None]
    query_pos = predictor.query_embed.weight[:, None]

    def query0_after_cross_attention(level: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            srcs, pos, _ = predictor._flatten_levels([level] + others)
            layer = predictor.transformer_cross_attention_layers[0]
            out = layer(queries, srcs[0], attn_mask=attn_mask, pos=pos[0], query_pos=query_pos)
        return out[0]

    base = query0_after_cross_attention(level0)
    background, foreground = level0.clone(), level0.clone()
    background[..., 1, 1] += 5.0
    foreground[..., 0, 0] += 5.0
    torch.testing.assert_close(query0_after_cross_attention(background), base)
    assert not torch.allclose(query0_after_cross_attention(foreground), base)
