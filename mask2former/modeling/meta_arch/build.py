"""Meta-architecture registry.

A registered class is called as ``cls(cfg)`` and returns an ``nn.Module`` taking
``list[dict]`` in detectron2's format (each with "image": (C, H, W) uint8/float tensor in
``INPUT.FORMAT``, optional "height"/"width", and for training "instances" / "sem_seg").
Training returns a dict of weighted scalar losses; inference a list of per-image dicts.
A video model (``VideoMaskFormer``) takes one dict per video instead, with "image" a list of
frames and "instances" a list of per-frame ``Instances`` (see its docstring).
"""

import torch
from fvcore.common.registry import Registry

from mask2former.config import check_supported
from mask2former.utils.registry import lookup

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = __doc__


def build_model(cfg, **kwargs) -> torch.nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    ``kwargs`` are facts the config does not hold, passed to the meta-architecture's
    constructor: ``MaskFormer`` takes ``thing_ids`` (contiguous ids of thing classes, from
    the dataset metadata), which panoptic inference needs. A config key that nothing reads
    and that holds another value than the code implements raises ``ConfigError`` first
    (:func:`mask2former.config.check_supported`).
    """
    check_supported(cfg)
    meta_arch = lookup(META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, "MODEL.META_ARCHITECTURE")
    model = meta_arch(cfg, **kwargs)
    model.to(torch.device(cfg.MODEL.DEVICE))
    return model
