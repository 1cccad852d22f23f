"""Segmentation-head registry.

A registered class is called as ``cls(cfg, input_shape)`` with ``input_shape`` the
backbone's ``{name: ShapeSpec}``. For ``MaskFormerHead``, ``forward(features, mask=None)``
returns the transformer decoder's output dict ("pred_logits", "pred_masks", "aux_outputs"; a
video decoder's also needs ``num_frames=T``, which the head passes on);
the per-pixel baselines return per-pixel class logits (and losses in training).
"""

from fvcore.common.registry import Registry

from mask2former.layers import ShapeSpec
from mask2former.utils.registry import lookup

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = __doc__


def build_sem_seg_head(cfg, input_shape: dict[str, ShapeSpec]):
    """Build the head named by ``cfg.MODEL.SEM_SEG_HEAD.NAME``."""
    head = lookup(SEM_SEG_HEADS_REGISTRY, cfg.MODEL.SEM_SEG_HEAD.NAME, "MODEL.SEM_SEG_HEAD.NAME")
    return head(cfg, input_shape)
