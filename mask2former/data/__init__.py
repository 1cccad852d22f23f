"""Datasets, augmentation, mappers and loaders."""

from . import datasets, transforms  # datasets: importing registers the builtin datasets
from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset
from .dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    DatasetMapper,
    DatasetMapperTTA,
    build_dataset_mapper,
)
from .detection_utils import BadSampleError, read_image
from .samplers import InferenceSampler, TrainingSampler

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "AspectRatioGroupedDataset",
    "BadSampleError",
    "DatasetCatalog",
    "DatasetMapper",
    "DatasetMapperTTA",
    "DatasetFromList",
    "InferenceSampler",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "TrainingSampler",
    "build_batch_data_loader",
    "build_dataset_mapper",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "datasets",
    "get_detection_dataset_dicts",
    "read_image",
    "transforms",
]
