"""Pixel decoders and transformer decoders of the tiny models: levels, shapes, predictions."""

import pytest
import torch

from mask2former.modeling.transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    VideoMultiScaleMaskedTransformerDecoder,
)
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
    model = build_tiny_model(name, deep_supervision).train()
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


@pytest.mark.parametrize("frames", [None, 3])
def test_masked_decoder_in_eval_mode_gives_the_last_prediction_only(frames):
    """Eval mode makes the earlier masks only at the attention's size: the last prediction is
    training mode's up to rounding, and there are no ``aux_outputs``."""
    if frames is None:
        decoder = build_tiny_model("mask2former").sem_seg_head.predictor
        g = torch.Generator().manual_seed(0)
        x = [torch.randn(2, HIDDEN, s, s + 1, generator=g) for s in (2, 4, 8)]
        kwargs, mask_features = {}, torch.randn(2, HIDDEN, 16, 18, generator=g)
    else:
        decoder = video_decoder()
        x, mask_features = clip_inputs(2 * frames)
        kwargs = {"num_frames": frames}
    with torch.no_grad():
        evaluated = decoder.eval()(x, mask_features, **kwargs)
        trained = decoder.train()(x, mask_features, **kwargs)
    assert "aux_outputs" not in evaluated and len(trained["aux_outputs"]) == 2
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(evaluated[key], trained[key], rtol=0, atol=1e-5)


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


# --------------------------------------------------------------------------- video
def video_decoder(seed: int = 0) -> VideoMultiScaleMaskedTransformerDecoder:
    torch.manual_seed(seed)
    return VideoMultiScaleMaskedTransformerDecoder(
        16,
        num_classes=3,
        hidden_dim=16,
        num_queries=5,
        nheads=2,
        dim_feedforward=32,
        dec_layers=3,
        pre_norm=False,
        mask_dim=16,
        enforce_input_project=False,
    ).eval()


def clip_inputs(frames: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Multi-scale features (frames, 16, s, s) for s = 2, 4, 8 and mask features at 16 x 16."""
    g = torch.Generator().manual_seed(seed)
    levels = [torch.randn(frames, 16, s, s, generator=g) for s in (2, 4, 8)]
    return levels, torch.randn(frames, 16, 16, 16, generator=g)


def test_video_decoder_predicts_one_class_and_one_mask_per_frame_per_query():
    decoder = video_decoder()
    x, mask_features = clip_inputs(2 * 3)  # two clips of three frames
    with torch.no_grad():
        out = decoder.train()(x, mask_features, num_frames=3)
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 3, 16, 16)
    assert len(out["aux_outputs"]) == 2
    assert all(a["pred_masks"].shape == (2, 5, 3, 16, 16) for a in out["aux_outputs"])
    with pytest.raises(ValueError, match="6 frames do not make clips of num_frames=4"):
        decoder(x, mask_features, num_frames=4)
    with pytest.raises(TypeError, match="num_frames"):
        decoder(x, mask_features)


def test_video_decoder_queries_see_every_frame_of_their_clip_only():
    """Changing frame 1 of clip 0 changes clip 0's class and frame-0 mask predictions (one set
    of queries attends to all frames), and leaves clip 1 as it is: a batch of clips gives what
    each clip gives alone."""
    decoder = video_decoder()
    x, mask_features = clip_inputs(4)
    with torch.no_grad():
        both = decoder(x, mask_features, num_frames=2)
        alone = [
            decoder(
                [level[2 * c : 2 * c + 2] for level in x],
                mask_features[2 * c : 2 * c + 2],
                num_frames=2,
            )
            for c in (0, 1)
        ]
        changed = [level.clone() for level in x]
        for level in changed:
            level[1] += 1.0
        after = decoder(changed, mask_features, num_frames=2)
    for c in (0, 1):
        torch.testing.assert_close(both["pred_masks"][c], alone[c]["pred_masks"][0])
        torch.testing.assert_close(both["pred_logits"][c], alone[c]["pred_logits"][0])
    assert not torch.allclose(after["pred_logits"][0], both["pred_logits"][0])
    assert not torch.allclose(after["pred_masks"][0, :, 0], both["pred_masks"][0, :, 0])
    torch.testing.assert_close(after["pred_masks"][1], both["pred_masks"][1])


def test_video_decoder_has_the_image_decoders_weights():
    """Same parameter names and shapes, and version, as the image decoder: an image
    checkpoint's decoder loads strictly, and an old one's static_query becomes query_feat."""
    video = video_decoder()
    torch.manual_seed(1)
    image = MultiScaleMaskedTransformerDecoder(
        16,
        num_classes=3,
        hidden_dim=16,
        num_queries=5,
        nheads=2,
        dim_feedforward=32,
        dec_layers=3,
        pre_norm=False,
        mask_dim=16,
        enforce_input_project=False,
    )
    state = image.state_dict()
    assert state._metadata[""]["version"] == video.state_dict()._metadata[""]["version"] == 2
    video.load_state_dict(state, strict=True)
    for key, value in state.items():
        assert torch.equal(video.state_dict()[key], value), key
    old = {k.replace("query_feat", "static_query"): v for k, v in state.items()}  # no versions
    fresh = video_decoder(seed=2)
    fresh.load_state_dict(old, strict=True)
    assert torch.equal(fresh.query_feat.weight, image.query_feat.weight)
