"""Registry of training dataset mappers, selected by ``INPUT.DATASET_MAPPER_NAME``."""

from __future__ import annotations

from collections.abc import Callable

from fvcore.common.registry import Registry

from ...utils.registry import lookup

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers. A registered class is built as ``cls(cfg, True)`` and called with one
dataset dict (the catalog's format); it returns a new dict with "image" (3, H, W) uint8 in
INPUT.FORMAT, "instances" (gt_classes (n,) int64, gt_masks (n, H, W) bool), "sem_seg" (H, W)
int64 where the mapper makes one, and the input's "file_name", "image_id", "height", "width".
It raises ``BadSampleError`` (naming the file) for an unusable sample.

A video mapper (``YTVISDatasetMapper``, "ytvis") returns lists instead, one entry per frame of
the clip: "image" (T tensors), "instances" (T Instances), "file_names". A class whose
``maps_test_samples`` is True maps test samples too, as ``cls(cfg, False)``.
"""


def register_dataset_mapper(name: str) -> Callable[[type], type]:
    """Class decorator: register a mapper under its config name (e.g. "mask_former_semantic")."""

    def decorator(cls: type) -> type:
        DATASET_MAPPER_REGISTRY._do_register(name, cls)  # fvcore registers by __name__ otherwise
        return cls

    return decorator


def build_dataset_mapper(cfg, is_train: bool) -> Callable[[dict], dict]:
    """The training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``, or (``is_train``
    False) the test mapper, as the published recipes use: ``DatasetMapper(cfg, False)``, or
    the named mapper itself when it maps test samples (``maps_test_samples``: videos)."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if not is_train:
        from .dataset_mapper import DatasetMapper

        named = DATASET_MAPPER_REGISTRY.get(name) if name in DATASET_MAPPER_REGISTRY else None
        if getattr(named, "maps_test_samples", False):
            return named(cfg, False)
        return DatasetMapper(cfg, False)
    return lookup(DATASET_MAPPER_REGISTRY, name, "INPUT.DATASET_MAPPER_NAME")(cfg, True)
