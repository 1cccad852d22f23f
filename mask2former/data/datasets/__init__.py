"""Dataset loaders (COCO instance, COCO panoptic, image + label pairs, Cityscapes, YouTube-VIS,
shapes, ytvis_shapes), helpers to register one's own dataset (a dataset folder:
``register_folder``), and the builtin datasets (registered on import)."""

from .builtin import datasets_root, register_all
from .cityscapes import (
    load_cityscapes_instances,
    load_cityscapes_panoptic,
    load_cityscapes_semantic,
)
from .coco import load_coco_json, register_coco_instances
from .coco_panoptic import (
    load_coco_panoptic_json,
    register_coco_panoptic,
    register_coco_panoptic_with_sem_seg,
)
from .common import DatasetFormatError
from .folder import DatasetFolder, open_folder
from .folder_registration import register_folder, register_folders
from .sem_seg import load_sem_seg, register_sem_seg
from .shapes import ensure_shapes_dataset, register_shapes
from .ytvis import load_ytvis_json, register_ytvis_instances
from .ytvis_shapes import ensure_ytvis_shapes_dataset, register_ytvis_shapes

register_all(datasets_root())

__all__ = [
    "DatasetFolder",
    "DatasetFormatError",
    "datasets_root",
    "ensure_shapes_dataset",
    "ensure_ytvis_shapes_dataset",
    "load_cityscapes_instances",
    "load_cityscapes_panoptic",
    "load_cityscapes_semantic",
    "load_coco_json",
    "load_coco_panoptic_json",
    "load_sem_seg",
    "load_ytvis_json",
    "open_folder",
    "register_all",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_with_sem_seg",
    "register_folder",
    "register_folders",
    "register_sem_seg",
    "register_shapes",
    "register_ytvis_instances",
    "register_ytvis_shapes",
]
