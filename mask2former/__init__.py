"""Mask2Former and MaskFormer: universal image segmentation on PyTorch.

``mask2former.DefaultPredictor(cfg)`` (also named ``Predictor``) gives predictions from
Python; ``tools/train_net.py`` trains and evaluates; see README.md.

The top level also carries the names official Mask2Former's and MaskFormer's packages
export (``add_maskformer2_config``, the dataset mappers, ``InstanceSegEvaluator``,
``SemanticSegmentorWithTTA``, ...), so that their scripts run with ``detectron2`` replaced
by ``mask2former`` in their imports (and ``mask_former`` by ``mask2former``). Each name is
imported on first use: ``import mask2former`` stays cheap and imports neither torch nor the
data or model code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): what ``from mask2former import name`` gives.
_LAZY_EXPORTS: dict[str, tuple[str, str]] = {
    "DefaultPredictor": ("mask2former.engine.predictor", "DefaultPredictor"),
    "Predictor": ("mask2former.engine.predictor", "DefaultPredictor"),
    # official Mask2Former / MaskFormer package exports
    "add_maskformer2_config": ("mask2former.config", "add_maskformer2_config"),
    "add_mask_former_config": ("mask2former.config", "add_mask_former_config"),
    "COCOInstanceNewBaselineDatasetMapper": (
        "mask2former.data.dataset_mappers",
        "COCOInstanceNewBaselineDatasetMapper",
    ),
    "COCOPanopticNewBaselineDatasetMapper": (
        "mask2former.data.dataset_mappers",
        "COCOPanopticNewBaselineDatasetMapper",
    ),
    "DETRPanopticDatasetMapper": ("mask2former.data.dataset_mappers", "DETRPanopticDatasetMapper"),
    "MaskFormerInstanceDatasetMapper": (
        "mask2former.data.dataset_mappers",
        "MaskFormerInstanceDatasetMapper",
    ),
    "MaskFormerPanopticDatasetMapper": (
        "mask2former.data.dataset_mappers",
        "MaskFormerPanopticDatasetMapper",
    ),
    "MaskFormerSemanticDatasetMapper": (
        "mask2former.data.dataset_mappers",
        "MaskFormerSemanticDatasetMapper",
    ),
    "MaskFormer": ("mask2former.modeling.meta_arch", "MaskFormer"),
    "SemanticSegmentorWithTTA": ("mask2former.engine", "SemanticSegmentorWithTTA"),
    "InstanceSegEvaluator": ("mask2former.evaluation", "InstanceSegEvaluator"),
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'mask2former' has no attribute {name!r}")
    module_name, attribute = _LAZY_EXPORTS[name]
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
