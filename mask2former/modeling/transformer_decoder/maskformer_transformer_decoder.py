"""MaskFormer (v1) transformer decoder: a DETR decoder over one feature map."""

from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import configurable
from mask2former.layers.linear import Linear

from ..position_encoding import PositionEmbeddingSine
from ..transformer_blocks import MLP, Transformer
from .build import TRANSFORMER_DECODER_REGISTRY
from .common import aux_outputs, decoder_config, input_projection, predict_masks


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """Queries decoded against one feature map; every layer's output predicts classes and masks.

    ``forward(x (N, C_in, h, w), mask_features (N, mask_dim, H, W), mask (N, H', W') bool or
    None)`` returns ``{"pred_logits": (N, Q, K+1), "pred_masks": (N, Q, H, W), "aux_outputs":
    one dict per earlier layer}`` (no "pred_logits" without ``mask_classification``; no
    "aux_outputs" without ``deep_supervision``). ``mask`` (True on padding) is resized to
    ``x`` and masks the encoder/decoder keys; published MaskFormer passes None.
    """

    #: The criterion's mask losses for these predictions under MASK_LOSS "auto": focal + dice on
    #: full-resolution masks (see mask2former.modeling.criterion).
    mask_loss_family = "full"

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
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        super().__init__()
        self.mask_classification = mask_classification
        self.num_queries = num_queries
        self.deep_supervision = deep_supervision
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            nhead=nheads,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = input_projection(in_channels, hidden_dim, enforce_input_project)
        if mask_classification:
            self.class_embed = Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        return {
            **decoder_config(cfg, in_channels, mask_classification),
            "dropout": mf.DROPOUT,
            "enc_layers": mf.ENC_LAYERS,
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    def forward(
        self, x: Tensor, mask_features: Tensor, mask: Tensor | None = None
    ) -> dict[str, object]:
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).bool()[0]
        pos = self.pe_layer(x, mask)
        hs, _ = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        # hs: (L, N, Q, C), L = decoder layers with deep supervision, else 1
        masks = list(predict_masks(self.mask_embed(hs), mask_features))
        classes = list(self.class_embed(hs)) if self.mask_classification else None
        out: dict[str, object] = {"pred_masks": masks[-1]}
        if classes is not None:
            out["pred_logits"] = classes[-1]
        if self.deep_supervision:
            out["aux_outputs"] = aux_outputs(classes, masks)
        return out
