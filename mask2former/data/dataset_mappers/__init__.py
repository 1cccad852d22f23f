"""Dataset mappers: dataset dict -> model input. Importing registers them."""

from .build import DATASET_MAPPER_REGISTRY, build_dataset_mapper, register_dataset_mapper
from .coco_lsj import COCOInstanceLSJDatasetMapper, COCOPanopticLSJDatasetMapper
from .detr_panoptic import DETRPanopticDatasetMapper
from .mask_former_instance import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic import MaskFormerPanopticDatasetMapper
from .mask_former_semantic import MaskFormerSemanticDatasetMapper
from .test_mapper import TestDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "COCOInstanceLSJDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "DETRPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "TestDatasetMapper",
    "build_dataset_mapper",
    "register_dataset_mapper",
]
