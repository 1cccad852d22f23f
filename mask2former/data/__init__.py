"""Datasets, augmentation, mappers and loaders."""

from . import datasets  # noqa: F401  (registers the builtin datasets)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]
