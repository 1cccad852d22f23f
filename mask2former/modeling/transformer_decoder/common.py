"""Pieces shared by the transformer decoders: config reading, input projection, output heads."""

import torch
from torch import Tensor, nn

from mask2former.layers import Conv2d, c2_xavier_fill
from mask2former.layers.linear import MIN_ONEDNN_MACS, linear, uses_onednn


def decoder_config(cfg, in_channels: int, mask_classification: bool) -> dict:
    """The constructor arguments both decoders read the same way from the config."""
    mf = cfg.MODEL.MASK_FORMER
    return {
        "in_channels": in_channels,
        "mask_classification": mask_classification,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "hidden_dim": mf.HIDDEN_DIM,
        "num_queries": mf.NUM_OBJECT_QUERIES,
        "nheads": mf.NHEADS,
        "dim_feedforward": mf.DIM_FEEDFORWARD,
        "dec_layers": mf.DEC_LAYERS,
        "pre_norm": mf.PRE_NORM,
        "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
    }


def input_projection(in_channels: int, hidden_dim: int, enforce: bool) -> nn.Module:
    """A 1x1 conv to ``hidden_dim`` when widths differ (or ``enforce``), else the identity.

    The identity is an empty ``nn.Sequential`` so it has no checkpoint keys, as published.
    """
    if in_channels == hidden_dim and not enforce:
        return nn.Sequential()
    proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
    c2_xavier_fill(proj)
    return proj


def predict_masks(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """Mask logits as dot products of query and pixel embeddings.

    mask_embed: (..., N, Q, C); mask_features: (N, C, H, W) -> (..., N, Q, H, W), or clips of
    frames (N, T, C, H, W) -> (..., N, Q, T, H, W): one query, one mask through the clip.
    """
    if mask_features.dim() == 5:
        return torch.einsum("...bqc,btchw->...bqthw", mask_embed, mask_features)
    if mask_embed.dim() == 3 and uses_onednn(mask_embed, mask_features, min_macs=0):
        # one product per image: (Q, C) queries by (H*W, C) pixels
        (q, c), (h, w) = mask_embed.shape[1:], mask_features.shape[-2:]
        if q * c * h * w >= MIN_ONEDNN_MACS:
            return _onednn_masks(mask_embed, mask_features)
    return torch.einsum("...bqc,bchw->...bqhw", mask_embed, mask_features)


def _onednn_masks(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """:func:`predict_masks` of (N, Q, C) and (N, C, H, W) through oneDNN's product, image by
    image: the pixels are the product's "weight" (H*W, C), a view of channels-last features."""
    n, c, h, w = mask_features.shape
    # (N, C, H, W) -> (N, H*W, C); no copy when the features are channels-last
    pixels = mask_features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    masks = [linear(embed, image_pixels) for embed, image_pixels in zip(mask_embed, pixels)]
    # N x (Q, H*W) -> (N, Q, H, W)
    return torch.stack(masks).view(n, -1, h, w)


def aux_outputs(classes: list[Tensor] | None, masks: list[Tensor]) -> list[dict[str, Tensor]]:
    """Every prediction but the last, as ``[{"pred_logits", "pred_masks"}, ...]`` (or masks only)."""
    if classes is None:
        return [{"pred_masks": m} for m in masks[:-1]]
    return [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])]
