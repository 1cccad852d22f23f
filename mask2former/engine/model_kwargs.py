"""Dataset facts a model needs beyond its config, read from the data catalog's metadata."""

from __future__ import annotations

from typing import Any

from ..config import CfgNode
from ..data import MetadataCatalog
from ..modeling.meta_arch import META_ARCH_REGISTRY, MaskFormer

__all__ = ["model_kwargs_from_metadata"]


def model_kwargs_from_metadata(cfg: CfgNode) -> dict[str, Any]:
    """Keyword arguments for ``build_model(cfg, **kwargs)``.

    A :class:`MaskFormer` (or a subclass, under any registered name) gets ``thing_ids``, the
    contiguous ids of thing classes, from the metadata of ``DATASETS.TRAIN[0]`` (the dataset
    the official ``MaskFormer.from_config`` reads, at test time too; else the first test
    dataset); panoptic and instance inference need them. Other meta-architectures get
    nothing: they are built as ``cls(cfg)``, detectron2's convention.
    """
    name = cfg.MODEL.META_ARCHITECTURE
    meta_arch = META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None
    if not (isinstance(meta_arch, type) and issubclass(meta_arch, MaskFormer)):
        return {}
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        return {}
    mapping = MetadataCatalog.get(names[0]).get("thing_dataset_id_to_contiguous_id")
    return {} if mapping is None else {"thing_ids": sorted(mapping.values())}
