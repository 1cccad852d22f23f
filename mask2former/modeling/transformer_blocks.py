"""Transformer blocks shared by every pixel decoder and transformer decoder.

Tensors are sequence-first, as ``nn.MultiheadAttention`` takes them by default:
queries ``(Q, N, C)``, memory ``(HW, N, C)``. Each residual block is either post-norm
(``norm(x + f(x))``, the published default) or pre-norm (``x + f(norm(x))``).

Two layouts of the same blocks exist because two published checkpoints name them
differently: Mask2Former's decoder keeps one module per block (``SelfAttentionLayer``,
``CrossAttentionLayer``, ``FFNLayer``, each with ``.norm``), while DETR's layers (used by
MaskFormer v1 and the transformer-encoder pixel decoder) hold ``norm1``/``norm2``/``norm3``
side by side. Both call the same functions below.
"""

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.layers.linear import Linear, linear


def with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    """``x + pos`` where a position embedding is given."""
    return x if pos is None else x + pos


def residual(
    x: Tensor,
    sublayer: Callable[[Tensor], Tensor],
    norm: nn.Module,
    dropout: nn.Module,
    normalize_before: bool,
) -> Tensor:
    """One residual block: pre-norm ``x + f(norm(x))`` or post-norm ``norm(x + f(x))``."""
    if normalize_before:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def multi_head_attention(
    attn: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """``attn(query, key, value, ...)[0]`` from ``attn``'s parameters, through :func:`linear`
    and ``F.scaled_dot_product_attention`` (the same function, rounded differently).

    query (L, N, E), key and value (S, N, E) -> (L, N, E). ``attn_mask`` (L, S) or
    (N * heads, L, S), bool (True: blocked) or additive float; ``key_padding_mask`` (N, S) bool
    (True: padding). A module with separate key/value widths, key/value biases or zero
    attention goes to ``attn`` itself.
    """
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        return attn(query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]
    n, heads = query.shape[1], attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = (None,) * 3 if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3)
    if query is key:  # self-attention: queries and keys in one product
        b_qk = None if b_q is None else attn.in_proj_bias[: 2 * attn.embed_dim]
        q, k = linear(query, attn.in_proj_weight[: 2 * attn.embed_dim], b_qk).chunk(2, dim=-1)
    else:
        q, k = linear(query, w_q, b_q), linear(key, w_k, b_k)
    v = linear(value, w_v, b_v)

    def heads_first(x: Tensor) -> Tensor:
        # (T, N, E) -> (N, heads, T, E / heads)
        return x.reshape(x.shape[0], n, heads, -1).permute(1, 2, 0, 3)

    mask = _sdpa_mask(attn_mask, key_padding_mask, n, heads, query.dtype)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(
        heads_first(q), heads_first(k), heads_first(v), attn_mask=mask, dropout_p=dropout
    )
    # (N, heads, L, E / heads) -> (L, N, E)
    out = out.permute(2, 0, 1, 3).reshape(query.shape[0], n, attn.embed_dim)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)


def _sdpa_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    n: int,
    heads: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """nn.MultiheadAttention's masks as one mask for ``scaled_dot_product_attention``: bool
    (True: attend) when both are bool, else additive float; (N | 1, heads | 1, L, S)."""
    masks = []
    if attn_mask is not None:
        # (L, S) -> (1, 1, L, S); (N * heads, L, S) -> (N, heads, L, S)
        lead = (n, heads) if attn_mask.dim() == 3 else (1, 1)
        masks.append(attn_mask.reshape(*lead, *attn_mask.shape[-2:]))
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(n, 1, 1, -1))
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        blocked = masks[0] if len(masks) == 1 else masks[0] | masks[1]
        return ~blocked
    additive = [
        (
            torch.zeros((), dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
            if m.dtype == torch.bool
            else m.to(dtype)
        )
        for m in masks
    ]
    return additive[0] if len(additive) == 1 else additive[0] + additive[1]


def self_attention(
    attn: nn.MultiheadAttention,
    x: Tensor,
    pos: Tensor | None = None,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Self-attention with positions added to queries and keys, not values: (L, N, C)."""
    q = k = with_pos(x, pos)
    return multi_head_attention(attn, q, k, x, attn_mask, key_padding_mask)


def cross_attention(
    attn: nn.MultiheadAttention,
    x: Tensor,
    memory: Tensor,
    query_pos: Tensor | None = None,
    pos: Tensor | None = None,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Queries x (Q, N, C) attend to memory (HW, N, C); ``attn_mask`` (N*heads, Q, HW) True=blocked."""
    return multi_head_attention(
        attn, with_pos(x, query_pos), with_pos(memory, pos), memory, attn_mask, key_padding_mask
    )


def feed_forward(linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module, x: Tensor) -> Tensor:
    """``linear2(dropout(relu(linear1(x))))``, through :func:`linear`."""
    hidden = linear(x, linear1.weight, linear1.bias, relu=True)
    return linear(dropout(hidden), linear2.weight, linear2.bias)


def xavier_init_matrices(module: nn.Module) -> None:
    """Xavier-uniform init of every parameter with more than one dimension."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


# --------------------------------------------------------------------------- #
# Mask2Former layout: one module per block.
# --------------------------------------------------------------------------- #
class _ResidualLayer(nn.Module):
    """One residual block: the given sublayer modules (registered first, under their keyword
    names), then ``norm`` and ``dropout``; every matrix Xavier-initialised as published."""

    def __init__(
        self, d_model: int, dropout: float, normalize_before: bool, **sublayers: nn.Module
    ):
        super().__init__()
        for name, module in sublayers.items():
            self.add_module(name, module)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_init_matrices(self)

    def _block(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        return residual(x, sublayer, self.norm, self.dropout, self.normalize_before)


class SelfAttentionLayer(_ResidualLayer):
    """Residual self-attention block. ``forward(x (Q, N, C), query_pos=None) -> (Q, N, C)``."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        super().__init__(d_model, dropout, normalize_before, self_attn=attn)

    def forward(
        self,
        x: Tensor,
        query_pos: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        return self._block(
            x, lambda y: self_attention(self.self_attn, y, query_pos, attn_mask, key_padding_mask)
        )


class CrossAttentionLayer(_ResidualLayer):
    """Residual cross-attention block.

    ``forward(x (Q, N, C), memory (HW, N, C), attn_mask (N*heads, Q, HW) or None,
    key_padding_mask (N, HW) or None, pos (HW, N, C), query_pos (Q, N, C)) -> (Q, N, C)``.
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        super().__init__(d_model, dropout, normalize_before, multihead_attn=attn)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        def sublayer(y: Tensor) -> Tensor:
            return cross_attention(
                self.multihead_attn, y, memory, query_pos, pos, attn_mask, key_padding_mask
            )

        return self._block(x, sublayer)


class FFNLayer(_ResidualLayer):
    """Residual feed-forward block. ``forward(x (L, N, C)) -> (L, N, C)``."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        linear1 = Linear(d_model, dim_feedforward)
        linear2 = Linear(dim_feedforward, d_model)
        super().__init__(d_model, dropout, normalize_before, linear1=linear1, linear2=linear2)

    def forward(self, x: Tensor) -> Tensor:
        return self._block(x, lambda y: feed_forward(self.linear1, self.linear2, self.dropout, y))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: (..., in) -> (..., out)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = linear(x, layer.weight, layer.bias, relu=i < len(self.layers) - 1)
        return x


# --------------------------------------------------------------------------- #
# DETR layout (MaskFormer v1 decoder, transformer-encoder pixel decoder).
# --------------------------------------------------------------------------- #
class _DetrLayer(nn.Module):
    """DETR's layer layout: the given attention modules (registered first, under their keyword
    names), the FFN ``linear1``/``linear2``, then per residual block i (the attentions, then the
    FFN) ``norm{i}`` and ``dropout{i}``, and the FFN's inner ``dropout``."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        normalize_before: bool,
        **attentions: nn.Module,
    ):
        super().__init__()
        for name, module in attentions.items():
            self.add_module(name, module)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        blocks = range(1, len(attentions) + 2)
        for i in blocks:
            self.add_module(f"norm{i}", nn.LayerNorm(d_model))
        self.dropout = nn.Dropout(dropout)
        for i in blocks:
            self.add_module(f"dropout{i}", nn.Dropout(dropout))
        self.normalize_before = normalize_before

    def _block(self, i: int, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """Residual block i (from 1) around ``sublayer``."""
        norm, dropout = self.get_submodule(f"norm{i}"), self.get_submodule(f"dropout{i}")
        return residual(x, sublayer, norm, dropout, self.normalize_before)

    def _ffn(self, x: Tensor) -> Tensor:
        return feed_forward(self.linear1, self.linear2, self.dropout, x)


class TransformerEncoderLayer(_DetrLayer):
    """DETR encoder layer: self-attention then FFN, norms ``norm1``/``norm2``.

    ``forward(src (HW, N, C), src_key_padding_mask (N, HW) or None, pos (HW, N, C)) -> (HW, N, C)``.
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool
    ):
        attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        super().__init__(d_model, dim_feedforward, dropout, normalize_before, self_attn=attn)

    def forward(
        self,
        src: Tensor,
        src_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        def attend(y: Tensor) -> Tensor:
            return self_attention(self.self_attn, y, pos, None, src_key_padding_mask)

        return self._block(2, self._block(1, src, attend), self._ffn)


class TransformerDecoderLayer(_DetrLayer):
    """DETR decoder layer: self-attention, cross-attention, FFN; norms ``norm1``..``norm3``.

    ``forward(tgt (Q, N, C), memory (HW, N, C), memory_key_padding_mask (N, HW) or None,
    pos (HW, N, C), query_pos (Q, N, C)) -> (Q, N, C)``.
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool
    ):
        super().__init__(
            d_model,
            dim_feedforward,
            dropout,
            normalize_before,
            self_attn=nn.MultiheadAttention(d_model, nhead, dropout=dropout),
            multihead_attn=nn.MultiheadAttention(d_model, nhead, dropout=dropout),
        )

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        def attend_memory(y: Tensor) -> Tensor:
            return cross_attention(
                self.multihead_attn, y, memory, query_pos, pos, None, memory_key_padding_mask
            )

        tgt = self._block(1, tgt, lambda y: self_attention(self.self_attn, y, query_pos))
        tgt = self._block(2, tgt, attend_memory)
        return self._block(3, tgt, self._ffn)


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers (keys ``layers.i``) and an optional final ``norm``."""

    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        src_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        for layer in self.layers:
            src = layer(src, src_key_padding_mask=src_key_padding_mask, pos=pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers and a final ``norm``.

    ``forward(...) -> (L, Q, N, C)``: the normed output of every layer when
    ``return_intermediate``, else only the last one (L = 1).
    """

    def __init__(
        self, layer: nn.Module, num_layers: int, norm: nn.Module, return_intermediate: bool
    ):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos)
            if self.return_intermediate:
                outputs.append(self.norm(tgt))
        if not self.return_intermediate:
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


def flatten_feature_map(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (HW, N, C), the sequence-first layout of attention."""
    return x.flatten(2).permute(2, 0, 1)


def flatten_padding_mask(mask: Tensor | None) -> Tensor | None:
    """(N, H, W) bool -> (N, HW) key-padding mask, or None."""
    return None if mask is None else mask.flatten(1)


class TransformerEncoderOnly(nn.Module):
    """DETR's encoder over one feature map (keys ``encoder.*``).

    ``forward(src (N, C, H, W), mask (N, H, W) bool or None, pos (N, C, H, W)) -> (N, C, H, W)``.
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(layer, num_encoder_layers, norm)
        xavier_init_matrices(self)

    def forward(self, src: Tensor, mask: Tensor | None, pos: Tensor) -> Tensor:
        n, c, h, w = src.shape
        memory = self.encoder(
            flatten_feature_map(src), flatten_padding_mask(mask), flatten_feature_map(pos)
        )
        # (HW, N, C) -> (N, C, H, W)
        return memory.permute(1, 2, 0).reshape(n, c, h, w)


class Transformer(nn.Module):
    """DETR's encoder-decoder (keys ``encoder.*``, ``decoder.*``).

    ``forward(src (N, C, H, W), mask (N, H, W) or None, query_embed (Q, C), pos (N, C, H, W))
    -> (hs (L, N, Q, C), memory (N, C, H, W))``, decoding from zero targets.
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
        return_intermediate_dec: bool = False,
    ):
        super().__init__()
        enc_layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, normalize_before
        )
        enc_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(enc_layer, num_encoder_layers, enc_norm)
        dec_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, normalize_before
        )
        self.decoder = TransformerDecoder(
            dec_layer, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate_dec
        )
        xavier_init_matrices(self)

    def forward(
        self, src: Tensor, mask: Tensor | None, query_embed: Tensor, pos: Tensor
    ) -> tuple[Tensor, Tensor]:
        n, c, h, w = src.shape
        pos_seq = flatten_feature_map(pos)
        key_padding_mask = flatten_padding_mask(mask)
        memory = self.encoder(flatten_feature_map(src), key_padding_mask, pos_seq)
        query_pos = query_embed.unsqueeze(1).repeat(1, n, 1)  # (Q, C) -> (Q, N, C)
        hs = self.decoder(torch.zeros_like(query_pos), memory, key_padding_mask, pos_seq, query_pos)
        # hs (L, Q, N, C) -> (L, N, Q, C); memory (HW, N, C) -> (N, C, H, W)
        return hs.transpose(1, 2), memory.permute(1, 2, 0).reshape(n, c, h, w)
