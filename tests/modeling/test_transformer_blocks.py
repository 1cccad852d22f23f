"""Shared blocks against independent references: torch.nn transformer layers, the sine formula."""

import math

import pytest
import torch
from torch import nn

from mask2former.modeling.position_encoding import PositionEmbeddingSine, PositionEmbeddingSine3D
from mask2former.modeling.transformer_blocks import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    attention_mask_from_masks,
)

D, HEADS, FFN = 16, 4, 32


def torch_layer(cls, pre_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    return cls(D, HEADS, FFN, dropout=0.0, norm_first=pre_norm).eval()


@pytest.mark.parametrize("pre_norm", [False, True])
def test_detr_encoder_layer_equals_torch(pre_norm):
    reference = torch_layer(nn.TransformerEncoderLayer, pre_norm)
    ours = TransformerEncoderLayer(D, HEADS, FFN, 0.0, pre_norm).eval()
    ours.load_state_dict(reference.state_dict())  # same parameter names
    src = torch.randn(7, 2, D)
    torch.testing.assert_close(ours(src), reference(src), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_detr_decoder_layer_equals_torch(pre_norm):
    reference = torch_layer(nn.TransformerDecoderLayer, pre_norm)
    ours = TransformerDecoderLayer(D, HEADS, FFN, 0.0, pre_norm).eval()
    ours.load_state_dict(reference.state_dict())
    tgt, memory = torch.randn(5, 2, D), torch.randn(9, 2, D)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    expected = reference(tgt, memory, memory_key_padding_mask=padding)
    torch.testing.assert_close(ours(tgt, memory, padding), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_mask2former_blocks_compose_to_torch_encoder_layer(pre_norm):
    """SelfAttentionLayer then FFNLayer is a standard encoder layer."""
    reference = torch_layer(nn.TransformerEncoderLayer, pre_norm)
    attn, ffn = SelfAttentionLayer(D, HEADS, 0.0, pre_norm), FFNLayer(D, FFN, 0.0, pre_norm)
    ref = reference.state_dict()
    attn.load_state_dict(
        {"norm." + k[6:]: v for k, v in ref.items() if k.startswith("norm1.")}
        | {k: v for k, v in ref.items() if k.startswith("self_attn.")}
    )
    ffn.load_state_dict(
        {"norm." + k[6:]: v for k, v in ref.items() if k.startswith("norm2.")}
        | {k: v for k, v in ref.items() if k.startswith("linear")}
    )
    x = torch.randn(6, 3, D)
    torch.testing.assert_close(ffn(attn(x)), reference(x), atol=1e-5, rtol=1e-5)


def test_cross_attention_adds_positions_to_queries_and_keys_only():
    layer = CrossAttentionLayer(D, HEADS).eval()
    x, memory = torch.randn(4, 1, D), torch.randn(8, 1, D)
    pos, query_pos = torch.randn(8, 1, D), torch.randn(4, 1, D)
    attn = layer.multihead_attn
    inner = attn(x + query_pos, memory + pos, memory)[0]
    expected = layer.norm(x + inner)
    torch.testing.assert_close(layer(x, memory, pos=pos, query_pos=query_pos), expected)


def test_mlp_layers_and_relu():
    mlp = MLP(3, 5, 2, 3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(5, 3), (5, 5), (2, 5)]
    x = torch.randn(4, 3)
    h = torch.relu(mlp.layers[1](torch.relu(mlp.layers[0](x))))
    torch.testing.assert_close(mlp(x), mlp.layers[2](h))


def test_sine_position_embedding_formula():
    feats, h, w = 4, 3, 5
    pos = PositionEmbeddingSine(feats, normalize=True)(torch.zeros(1, 1, h, w))
    assert pos.shape == (1, 2 * feats, h, w)
    for i in range(h):
        for j in range(w):
            y = (i + 1) / (h + 1e-6) * 2 * math.pi
            x = (j + 1) / (w + 1e-6) * 2 * math.pi
            for k in range(feats):
                fn = math.sin if k % 2 == 0 else math.cos
                freq = 10000 ** (2 * (k // 2) / feats)
                assert pos[0, k, i, j].item() == pytest.approx(fn(y / freq), abs=1e-5)
                assert pos[0, feats + k, i, j].item() == pytest.approx(fn(x / freq), abs=1e-5)


def test_sine_position_embedding_normalises_over_the_unpadded_region():
    layer = PositionEmbeddingSine(4, normalize=True)
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 4:] = True
    padded = layer(torch.zeros(1, 1, 4, 6), mask)[..., :3, :4]
    alone = layer(torch.zeros(1, 1, 3, 4))
    torch.testing.assert_close(padded, alone)


def test_sine_3d_position_embedding_formula():
    """Each frame's (y, x) embedding plus the frame index's over all channels, the frame index
    normalised like y and x and its frequencies spread over twice the channels (published
    PositionEmbeddingSine3D)."""
    feats, frames, h, w = 4, 3, 2, 5
    layer = PositionEmbeddingSine3D(feats, normalize=True)
    pos = layer(torch.zeros(2, frames, 7, h, w))
    assert pos.shape == (2, frames, 2 * feats, h, w)
    spatial = PositionEmbeddingSine(feats, normalize=True)(torch.zeros(1, 1, h, w))[0]
    for t in range(frames):
        z = (t + 1) / (frames + 1e-6) * 2 * math.pi
        for k in range(2 * feats):
            fn = math.sin if k % 2 == 0 else math.cos
            temporal = fn(z / 10000 ** (2 * (k // 2) / (2 * feats)))
            expected = spatial[k] + temporal
            torch.testing.assert_close(pos[1, t, k], expected, atol=1e-5, rtol=0)


def test_sine_3d_position_embedding_normalises_over_the_unpadded_frames():
    layer = PositionEmbeddingSine3D(4, normalize=True)
    mask = torch.zeros(1, 3, 4, 6, dtype=torch.bool)
    mask[:, 2] = True  # the last frame is padding
    mask[:, :, 3:, :] = True
    padded = layer(torch.zeros(1, 3, 1, 4, 6), mask)[:, :2, :, :3, :]
    alone = layer(torch.zeros(1, 2, 1, 3, 6))
    torch.testing.assert_close(padded, alone)
    with pytest.raises(ValueError, match=r"\(N, T, C, H, W\)"):
        layer(torch.zeros(1, 1, 4, 6))


def test_attention_mask_of_clips_spans_every_frame():
    """(N, Q, T, H, W) -> (N*heads, Q, T*h*w), frame after frame; a query is freed only when it
    is blocked in every frame of its clip."""
    logits = torch.full((1, 3, 2, 4, 4), -5.0)
    logits[0, 0, 0, :2, :2] = 5.0  # query 0: top-left of frame 0
    logits[0, 0, 1, 2:, 2:] = 5.0  # and bottom-right of frame 1
    logits[0, 1, 1] = 5.0  # query 1: all of frame 1, nothing of frame 0
    mask = attention_mask_from_masks(logits, (2, 2), num_heads=2)
    assert mask.shape == (2, 3, 8)
    per_frame = [attention_mask_from_masks(logits[:, :, t], (2, 2), 2) for t in range(2)]
    assert mask[:, 0].tolist() == torch.cat([f[:, 0] for f in per_frame], -1).tolist()
    assert mask[0, 0].tolist() == [False, True, True, True, True, True, True, False]
    # query 1 keeps frame 0 blocked (the image rule would free an empty frame on its own)
    assert mask[0, 1].tolist() == [True] * 4 + [False] * 4
    assert not mask[:, 2].any()  # blocked everywhere: attends everywhere


def test_attention_mask_blocks_background_and_frees_empty_rows():
    logits = torch.full((2, 3, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0  # image 0, query 0: top-left foreground
    logits[1, 2] = 5.0  # image 1, query 2: everything foreground
    mask = attention_mask_from_masks(logits, (2, 2), num_heads=2)
    assert mask.shape == (4, 3, 4) and mask.dtype == torch.bool and not mask.requires_grad
    # batch-major head layout, as nn.MultiheadAttention expects: index = image * heads + head
    for head in range(2):
        assert mask[head, 0].tolist() == [False, True, True, True]
        assert not mask[head, 1].any()  # fully background: attends everywhere
        assert not mask[2 + head, 2].any()
        assert not mask[2 + head, 0].any()
