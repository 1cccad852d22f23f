"""Mask2Former's transformer decoder: masked attention over a round-robin of feature levels."""

from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import configurable
from mask2former.layers.linear import Linear

from ..checkpoint_compat import DECODER_QUERY_FEAT_VERSION, predates, rename_static_query
from ..position_encoding import PositionEmbeddingSine
from ..transformer_blocks import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .build import TRANSFORMER_DECODER_REGISTRY
from .common import aux_outputs, decoder_config, input_projection, predict_masks


def attention_mask_from_masks(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """Masked attention's mask: True where a query may NOT look.

    mask_logits: (N, Q, H, W) -> (N * num_heads, Q, h * w) bool at ``size`` = (h, w), or for
    clips (N, Q, T, H, W) -> (N * num_heads, Q, T * h * w), frame after frame: blocked where
    the bilinearly resized prediction has sigmoid < 0.5. A query whose row would be blocked
    everywhere (in every frame) attends everywhere instead. No gradient flows through it.
    """
    n, q = mask_logits.shape[:2]
    # each frame is resized on its own: (N, Q, T, H, W) -> (N, Q*T, H, W); images keep their shape
    resized = mask_logits.flatten(1, -3)
    if resized.shape[-2:] != tuple(size):
        resized = F.interpolate(resized, size=size, mode="bilinear", align_corners=False)
    blocked = resized.sigmoid().view(n, q, -1) < 0.5
    # fully blocked rows are the same for every head: unblock them before repeating
    blocked[blocked.all(-1)] = False
    blocked = blocked.unsqueeze(1).repeat(1, num_heads, 1, 1).flatten(0, 1)
    return blocked.detach()


def resize_mask_features(mask_features: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) -> (N, C, h, w) bilinearly, or each frame of clips (N, T, C, H, W)."""
    # (N, T, C, H, W) -> (N*T, C, H, W) and back; images keep their shape
    frames = mask_features.flatten(0, -4)
    resized = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    return resized.view(*mask_features.shape[:-2], *size)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learned queries refined by (masked cross-attention, self-attention, FFN) layers.

    Layer i attends to level ``i % 3`` of the multi-scale features (1/32, 1/16, 1/8),
    restricted to the foreground of the previous prediction at that level's size. The
    learned queries themselves make the first prediction, so ``dec_layers`` predictions
    come from ``dec_layers - 1`` layers.

    ``forward(x: list of 3 (N, C_in, h_l, w_l) coarsest first, mask_features (N, mask_dim,
    H, W), mask=None)`` returns ``{"pred_logits": (N, Q, K+1), "pred_masks": (N, Q, H, W),
    "aux_outputs": the dec_layers - 1 earlier predictions (in training mode only)}``. The
    published decoder has no padding mask; ``mask`` is accepted for the common interface and
    must be None.

    As in the official ``from_config``, the config gives neither the dropout (0.0 in every
    layer, whatever ``MODEL.MASK_FORMER.DROPOUT`` says) nor ``deep_supervision`` (the earlier
    predictions are always returned in training mode; the criterion's weights decide which are
    trained). Unlike the published decoder, eval mode returns only the last prediction: the
    earlier masks are then computed only at the size their attention masks need (the same
    attention masks up to rounding, much cheaper), and nothing at inference reads them.

    ``mask_classification`` is in the registry's call contract ``cls(cfg, in_channels,
    mask_classification)`` (the official signature; MaskFormer v1's decoder predicts masks only
    for the per-pixel baseline with False). This decoder always predicts classes: False raises.
    """

    # Recorded in state_dict._metadata as the published decoder does; see checkpoint_compat.
    _version = DECODER_QUERY_FEAT_VERSION
    #: The criterion's mask losses for these predictions under MASK_LOSS "auto": point-sampled
    #: BCE + dice (see mask2former.modeling.criterion).
    mask_loss_family = "point"
    #: The position embedding of the memory's pixels (``pe_layer``; it has no parameters).
    position_embedding: type[PositionEmbeddingSine] = PositionEmbeddingSine

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        dropout: float = 0.0,
        deep_supervision: bool = True,
        num_feature_levels: int = 3,
    ):
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder only supports mask classification")
        if dec_layers < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {dec_layers}")
        self.mask_classification = mask_classification
        self.num_heads = nheads
        self.num_layers = dec_layers - 1
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.deep_supervision = deep_supervision
        self.pe_layer = self.position_embedding(hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout, pre_norm)
            for _ in range(self.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout, pre_norm)
            for _ in range(self.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout, pre_norm) for _ in range(self.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            input_projection(in_channels, hidden_dim, enforce_input_project)
            for _ in range(num_feature_levels)
        )
        self.class_embed = Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        # As officially: neither MODEL.MASK_FORMER.DROPOUT nor DEEP_SUPERVISION (class docstring).
        return decoder_config(cfg, in_channels, mask_classification)

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, local_metadata: dict, *args: object
    ) -> None:
        if predates(local_metadata, DECODER_QUERY_FEAT_VERSION):
            rename_static_query(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def _flatten_levels(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list]:
        """Per level: source (hw, N, C) with its level embedding, positions (hw, N, C), size."""
        srcs, pos, sizes = [], [], []
        for lvl in range(self.num_feature_levels):
            sizes.append(tuple(x[lvl].shape[-2:]))
            # (N, C, h, w) -> (hw, N, C)
            pos.append(self.pe_layer(x[lvl]).flatten(2).permute(2, 0, 1))
            srcs.append(self._project(x[lvl], lvl).permute(2, 0, 1))
        return srcs, pos, sizes

    def _project(self, feature: Tensor, lvl: int) -> Tensor:
        """(N, C_in, h, w) -> (N, C, hw): the input projection plus the level embedding."""
        return (
            self.input_proj[lvl](feature).flatten(2) + self.level_embed.weight[lvl][None, :, None]
        )

    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor, attn_mask_target_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (Q, N, C) -> class logits (N, Q, K+1), mask logits (N, Q, H, W), next attn mask.

        With clips, ``mask_features`` (N, T, C, H, W) gives mask logits (N, Q, T, H, W).
        """
        decoded = self.decoder_norm(output).transpose(0, 1)
        outputs_class = self.class_embed(decoded)
        outputs_mask = predict_masks(self.mask_embed(decoded), mask_features)
        attn_mask = attention_mask_from_masks(outputs_mask, attn_mask_target_size, self.num_heads)
        return outputs_class, outputs_mask, attn_mask

    def forward(
        self, x: list[Tensor], mask_features: Tensor, mask: Tensor | None = None
    ) -> dict[str, object]:
        self._check_inputs(x, mask)
        srcs, pos, sizes = self._flatten_levels(x)
        return self._decode(srcs, pos, sizes, mask_features)

    def _check_inputs(self, x: list[Tensor], mask: Tensor | None) -> None:
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        if mask is not None:
            raise ValueError(f"{type(self).__name__} takes no padding mask (as published)")

    def _decode(
        self, srcs: list[Tensor], pos: list[Tensor], sizes: list, mask_features: Tensor
    ) -> dict[str, object]:
        """The layers over the flattened levels (``_flatten_levels``); N = ``srcs[l].shape[1]``.

        In eval mode only the last prediction is made (no ``aux_outputs``): the earlier ones
        serve only as attention masks, computed at the attention's size (see
        :meth:`_inference_attention_mask`).
        """
        n = srcs[0].shape[1]
        # (Q, C) -> (Q, N, C)
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, n, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, n, 1)
        if not self.training:
            level_features = [resize_mask_features(mask_features, size) for size in sizes]
        classes, masks = [], []
        attn_mask = None  # the learned queries' prediction (i = 0) gives the first one
        for i in range(self.num_layers + 1):
            if i > 0:
                output = self._layer(i - 1, output, srcs, pos, attn_mask, query_embed)
            next_lvl = i % self.num_feature_levels
            if not self.training and i < self.num_layers:
                attn_mask = self._inference_attention_mask(output, level_features[next_lvl])
                continue
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, sizes[next_lvl]
            )
            classes.append(outputs_class)
            masks.append(outputs_mask)
        out: dict[str, object] = {"pred_logits": classes[-1], "pred_masks": masks[-1]}
        if self.deep_supervision and self.training:
            out["aux_outputs"] = aux_outputs(classes, masks)
        return out

    def _layer(
        self,
        i: int,
        output: Tensor,
        srcs: list[Tensor],
        pos: list[Tensor],
        attn_mask: Tensor,
        query_embed: Tensor,
    ) -> Tensor:
        """Layer ``i``: masked cross-attention to level ``i % levels``, self-attention, FFN."""
        lvl = i % self.num_feature_levels
        output = self.transformer_cross_attention_layers[i](
            output, srcs[lvl], attn_mask=attn_mask, pos=pos[lvl], query_pos=query_embed
        )
        output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
        return self.transformer_ffn_layers[i](output)

    def _inference_attention_mask(self, output: Tensor, level_features: Tensor) -> Tensor:
        """The next attention mask from queries (Q, N, C) and mask features already resized to
        the attention's size, (N, C, h, w) or clips (N, T, C, h, w).

        Bilinear resizing is linear, so masks predicted from resized features equal resized
        full-resolution masks up to rounding, at a fraction of the cost.
        """
        decoded = self.decoder_norm(output).transpose(0, 1)
        mask_logits = predict_masks(self.mask_embed(decoded), level_features)
        return attention_mask_from_masks(mask_logits, level_features.shape[-2:], self.num_heads)
