"""Large-scale-jitter COCO mappers: ``coco_instance_lsj`` and ``coco_panoptic_lsj``.

Augmentation (INPUT.RANDOM_FLIP, INPUT.IMAGE_SIZE, INPUT.MIN_SCALE / MAX_SCALE): flip, resize
by a random scale of IMAGE_SIZE, then a random IMAGE_SIZE square crop, padded at the right
and bottom (image 128, segmentations 255) where the image is smaller.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...config import configurable
from ...structures import BitMasks, Boxes, PolygonMasks
from ...utils.panoptic_png import rgb2id
from ..detection_utils import (
    BadSampleError,
    annotations_to_instances,
    check_label_size,
    filter_empty_instances,
    image_to_tensor,
    random_flip_from_config,
    read_image,
    transform_instance_annotations,
)
from ..transforms import (
    Augmentation,
    FixedSizeCrop,
    ResizeScale,
    TransformList,
    apply_transform_gens,
)
from .build import register_dataset_mapper
from .mapper_utils import (
    ImageMapperBase,
    check_mask_format,
    read_checked_image,
    refuse_unread_inputs,
)
from .mask_former_panoptic import instances_from_panoptic

__all__ = [
    "COCOInstanceLSJDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "lsj_augmentations",
]


def lsj_augmentations(cfg) -> list[Augmentation]:
    """Flip (INPUT.RANDOM_FLIP), ResizeScale and FixedSizeCrop to INPUT.IMAGE_SIZE square."""
    size = cfg.INPUT.IMAGE_SIZE
    flip = random_flip_from_config(cfg)
    return ([flip] if flip is not None else []) + [
        ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
        FixedSizeCrop(crop_size=(size, size)),
    ]


class _LSJMapper(ImageMapperBase):
    """What both LSJ mappers share: construction and the augmented image."""

    mapper_name = ""

    @configurable
    def __init__(
        self, is_train: bool = True, *, augmentations: list[Augmentation], image_format: str
    ):
        super().__init__(is_train, augmentations, image_format)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        refuse_unread_inputs(
            cfg, cls.mapper_name, {"INPUT.CROP.ENABLED": False, "INPUT.COLOR_AUG_SSD": False}
        )
        return {
            "is_train": is_train,
            "augmentations": lsj_augmentations(cfg),
            "image_format": cfg.INPUT.FORMAT,
        }

    def augment(self, dataset_dict: dict) -> tuple[np.ndarray, TransformList]:
        """Read and augment the image; set "image". Returns the image read and the transforms."""
        image = read_checked_image(dataset_dict, self.image_format)
        augmented, transforms = apply_transform_gens(self.augmentations, image)
        dataset_dict["image"] = image_to_tensor(augmented)
        return image, transforms


@register_dataset_mapper("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper(_LSJMapper):
    """LSJ instance mapper: "annotations" -> instances (gt_classes, gt_masks, gt_boxes).

    Also returns "padding_mask" (H, W) bool, True on the padded pixels (the published
    mapper's is False everywhere: it pads its validity map with the segmentation pad value
    255, which reads as valid). Crowd annotations are left out; instances with no polygon
    or an empty box after the crop are dropped. INPUT.MASK_FORMAT "polygon" (published)
    needs polygon annotations; "bitmask" also takes RLE.
    """

    mapper_name = "coco_instance_lsj"

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[Augmentation],
        image_format: str,
        mask_format: str = "polygon",
    ):
        super().__init__(is_train, augmentations=augmentations, image_format=image_format)
        self.mask_format = mask_format

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {**super().from_config(cfg, is_train), "mask_format": check_mask_format(cfg)}

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        image, transforms = self.augment(dataset_dict)
        padding = transforms.apply_segmentation(np.ones(image.shape[:2], dtype=np.uint8)) != 1
        dataset_dict["padding_mask"] = torch.from_numpy(padding)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" not in dataset_dict:
            raise BadSampleError(file_name, "no 'annotations' for instance segmentation")
        size = tuple(dataset_dict["image"].shape[-2:])
        annotations = [
            transform_instance_annotations(
                a, transforms, size, input_size=image.shape[:2], file_name=file_name
            )
            for a in dataset_dict.pop("annotations")
            if a.get("iscrowd", 0) == 0
        ]
        dataset_dict["instances"] = self.instances(annotations, padding, file_name)
        return dataset_dict

    def instances(self, annotations: list[dict], padding: np.ndarray, file_name: str):
        """Instances with boxes of their masks, the empty ones dropped, masks as (n, H, W) bool
        tensors. ``padding``: (H, W) bool, True on padded pixels."""
        size = padding.shape
        for a in annotations:
            if "segmentation" not in a:
                raise BadSampleError(file_name, f"annotation without 'segmentation': {a}")
        instances = annotations_to_instances(
            annotations, size, self.mask_format, file_name=file_name
        )
        if not instances.has("gt_masks"):  # no annotation left
            instances.gt_masks = PolygonMasks([])
        if isinstance(instances.gt_masks, PolygonMasks):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
            instances = filter_empty_instances(instances)
            instances.gt_masks = instances.gt_masks.to_bitmasks(*size)
        else:
            # a moved RLE mask holds the segmentation pad value 255 in the padding
            instances.gt_masks &= ~torch.from_numpy(padding)
            instances.gt_boxes = BitMasks(instances.gt_masks).get_bounding_boxes()
            instances = filter_empty_instances(instances)
        return instances


@register_dataset_mapper("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(_LSJMapper):
    """LSJ panoptic mapper: panoptic PNG -> instances (gt_classes, gt_masks, gt_boxes), one
    per non-crowd segment (empty where cropped away, as published); the PNG moves by nearest
    neighbour and pads with colour 255 (an id no segment has)."""

    mapper_name = "coco_panoptic_lsj"

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        image, transforms = self.augment(dataset_dict)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
            raise BadSampleError(file_name, "no 'pan_seg_file_name' / 'segments_info' for panoptic")
        pan_file = dataset_dict.pop("pan_seg_file_name")
        pan_colors = read_image(pan_file, "RGB")
        check_label_size(pan_file, pan_colors, file_name, image)
        segment_ids = rgb2id(transforms.apply_segmentation(pan_colors))
        instances = instances_from_panoptic(segment_ids, dataset_dict["segments_info"])
        instances.gt_boxes = (
            BitMasks(instances.gt_masks).get_bounding_boxes()
            if len(instances)
            else Boxes(torch.zeros((0, 4)))
        )
        dataset_dict["instances"] = instances
        return dataset_dict


COCOInstanceLSJDatasetMapper = COCOInstanceNewBaselineDatasetMapper
COCOPanopticLSJDatasetMapper = COCOPanopticNewBaselineDatasetMapper
