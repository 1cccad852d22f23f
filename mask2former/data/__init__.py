"""Datasets, augmentation, mappers and loaders."""

from .catalog import DatasetCatalog, Metadata, MetadataCatalog

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]
