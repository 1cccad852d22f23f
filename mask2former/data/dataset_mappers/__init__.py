"""Dataset mappers: dataset dict -> model input. Importing registers the training mappers.

Each takes ``(cfg, is_train)`` as the published ones do; the class names are the published
Mask2Former / MaskFormer names (the LSJ mappers also under their ``*LSJDatasetMapper``
aliases). ``YTVISDatasetMapper`` maps YouTube-VIS videos to clips, for training and testing;
video datasets select it (see :func:`build_dataset_mapper`).
"""

from .build import (
    DATASET_MAPPER_REGISTRY,
    build_dataset_mapper,
    dataset_mapper_name,
    is_video_dataset,
    register_dataset_mapper,
)
from .coco_lsj import (
    COCOInstanceLSJDatasetMapper,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
)
from .dataset_mapper import DatasetMapper
from .detr_panoptic import DETRPanopticDatasetMapper
from .mask_former_instance import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic import MaskFormerPanopticDatasetMapper
from .mask_former_semantic import MaskFormerSemanticDatasetMapper
from .tta_mapper import DatasetMapperTTA
from .ytvis import YTVISDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "COCOInstanceLSJDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "DETRPanopticDatasetMapper",
    "DatasetMapper",
    "DatasetMapperTTA",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "YTVISDatasetMapper",
    "build_dataset_mapper",
    "dataset_mapper_name",
    "is_video_dataset",
    "register_dataset_mapper",
]
