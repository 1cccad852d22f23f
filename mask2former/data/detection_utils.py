"""Reading images and label maps, and turning annotations into ``Instances``.

Every problem with a sample's files or annotations raises :class:`BadSampleError`, whose
message starts with the file name; ``MapDataset`` may skip such samples when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from iopath.common.file_io import g_pathmgr
from PIL import Image, ImageOps

from ..structures import BitMasks, Boxes, Instances
from .transforms import TransformList

__all__ = [
    "IMAGE_FORMATS",
    "BadSampleError",
    "add_boxes_from_masks",
    "check_image_size",
    "check_label_size",
    "check_label_values",
    "image_to_tensor",
    "instances_from_annotations",
    "instances_from_panoptic",
    "read_image",
    "read_label_map",
    "segmentation_to_mask",
    "semantic_from_panoptic",
]

IMAGE_FORMATS = ("BGR", "RGB", "L")


class BadSampleError(ValueError):
    """A sample whose image, label map or annotation cannot be used.

    ``BadSampleError(file_name, problem)``; with one argument it is the whole message (so the
    type survives torch's re-raising of a loader worker's error in the main process).
    """

    def __init__(self, file_name: str, problem: str = ""):
        self.file_name = file_name
        self.problem = problem
        super().__init__(f"{file_name}: {problem}" if problem else file_name)


def _open_image(file_name: str) -> Image.Image:
    """Open and decode ``file_name``, with its EXIF orientation applied."""
    if not g_pathmgr.exists(file_name):
        raise BadSampleError(file_name, "file not found")
    try:
        with g_pathmgr.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except (OSError, Image.DecompressionBombError) as e:
        raise BadSampleError(file_name, f"cannot decode the image ({e})") from e
    return ImageOps.exif_transpose(image)


def _to_8bit(image: Image.Image, file_name: str) -> Image.Image:
    """16-bit (or 32-bit integer holding 16-bit values) single-channel -> 8-bit 'L'."""
    array = np.asarray(image)
    if image.mode == "F" or array.min() < 0 or array.max() > 65535:
        raise BadSampleError(
            file_name,
            f"unsupported image mode {image.mode!r} (values {array.min()}..{array.max()})",
        )
    return Image.fromarray(np.round(array.astype(np.float64) / 257.0).astype(np.uint8), "L")


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """Read an image as a numpy array, EXIF rotation applied.

    Args:
        file_name: path (anything iopath opens).
        format: "BGR" or "RGB" -> (H, W, 3) uint8; "L" -> (H, W, 1) uint8; None -> the stored
            values unchanged, (H, W) for single-channel files (label maps, 16-bit included).
            Grayscale, palette, RGBA (alpha dropped) and 16-bit (scaled by 1/257) images
            convert to the format.
    Raises:
        BadSampleError: the file is missing or cannot be decoded (the message names it).
    """
    if format is not None and format not in IMAGE_FORMATS:
        raise ValueError(
            f"read_image: format must be one of {IMAGE_FORMATS} or None, got {format!r}"
        )
    image = _open_image(file_name)
    if format is None:
        return np.asarray(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image, file_name)
    array = np.asarray(image.convert("L" if format == "L" else "RGB"))
    if format == "L":
        return array[:, :, None]
    return np.ascontiguousarray(array[:, :, ::-1]) if format == "BGR" else array


def read_label_map(file_name: str) -> np.ndarray:
    """Read a semantic label map as (H, W) int64 (8- or 16-bit PNG / TIFF)."""
    labels = read_image(file_name)
    if labels.ndim != 2:
        raise BadSampleError(
            file_name, f"a label map must have one channel, got shape {labels.shape}"
        )
    return labels.astype(np.int64)


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Raise if ``image`` (H, W, C) disagrees with the dict's "height" / "width"."""
    height, width = image.shape[:2]
    expected = (dataset_dict.get("height", height), dataset_dict.get("width", width))
    if expected != (height, width):
        raise BadSampleError(
            dataset_dict["file_name"],
            f"image is {width}x{height} (width x height) but its annotation says "
            f"{expected[1]}x{expected[0]}",
        )


def check_label_size(
    label_file: str, label: np.ndarray, image_file: str, image: np.ndarray
) -> None:
    """Raise if a label map (or panoptic PNG) is not the size of its image."""
    if label.shape[:2] != image.shape[:2]:
        raise BadSampleError(
            label_file,
            f"label map is {label.shape[1]}x{label.shape[0]} (width x height) but its image "
            f"{image_file} is {image.shape[1]}x{image.shape[0]}",
        )


def check_label_values(
    label_file: str, labels: np.ndarray, num_classes: int | None, ignore_label: int
) -> None:
    """Raise if a label map holds a value outside [0, num_classes) other than ``ignore_label``."""
    if num_classes is None:
        return
    bad = (labels != ignore_label) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = np.unique(labels[bad])[:5].tolist()
        raise BadSampleError(
            label_file,
            f"label values {values} are outside 0..{num_classes - 1} "
            f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES) and are not the ignore label {ignore_label}",
        )


def _checked_polygons(polygons: Sequence, file_name: str) -> list[np.ndarray]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] as flat float arrays, validated."""
    try:
        flat = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polygons]
    except (TypeError, ValueError) as e:
        raise BadSampleError(file_name, f"malformed polygon ({e})") from e
    for p in flat:
        if len(p) < 6 or len(p) % 2:
            raise BadSampleError(file_name, f"malformed polygon with {len(p)} coordinates")
    return flat


def _polygons_to_mask(polygons: Sequence, height: int, width: int, file_name: str) -> np.ndarray:
    polygons = _checked_polygons(polygons, file_name)
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([p.tolist() for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def segmentation_to_mask(segmentation: Any, height: int, width: int, file_name: str) -> np.ndarray:
    """COCO "segmentation" (polygons, RLE dict or (H, W) array) -> (H, W) bool mask."""
    if isinstance(segmentation, list):
        return _polygons_to_mask(segmentation, height, width, file_name)
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
        mask = mask_util.decode(segmentation).astype(bool)
    elif isinstance(segmentation, np.ndarray):
        mask = segmentation.astype(bool)
    else:
        raise BadSampleError(file_name, f"unknown segmentation type {type(segmentation).__name__}")
    if mask.shape != (height, width):
        raise BadSampleError(
            file_name, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"
        )
    return mask


def _transformed_mask(
    segmentation: Any,
    transforms: TransformList,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    file_name: str,
) -> np.ndarray:
    """Mask of one annotation after ``transforms``: polygons move (and clip) exactly, then
    rasterise at the output size; RLE / arrays decode, then move as masks."""
    if isinstance(segmentation, list):
        polygons = [p.reshape(-1, 2) for p in _checked_polygons(segmentation, file_name)]
        moved = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        return _polygons_to_mask(moved, *output_size, file_name)
    mask = segmentation_to_mask(segmentation, *input_size, file_name)
    return transforms.apply_mask(mask.astype(np.uint8)).astype(bool)


def _masks_tensor(masks: list[np.ndarray], image_size: tuple[int, int]) -> torch.Tensor:
    if not masks:
        return torch.zeros((0, *image_size), dtype=torch.bool)
    return torch.from_numpy(np.ascontiguousarray(np.stack(masks))).to(torch.bool)


def instances_from_annotations(
    annotations: list[dict],
    transforms: TransformList,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    file_name: str,
) -> Instances:
    """Instance annotations -> ``Instances`` with gt_classes (n,) int64 and gt_masks (n, H, W) bool.

    Crowd annotations and masks left empty by the transforms (e.g. cropped away) are dropped.
    ``input_size`` / ``output_size`` are (H, W) before and after ``transforms``.
    """
    classes, masks = [], []
    for annotation in annotations:
        if annotation.get("iscrowd", 0):
            continue
        if "segmentation" not in annotation:
            raise BadSampleError(file_name, f"annotation without 'segmentation': {annotation}")
        mask = _transformed_mask(
            annotation["segmentation"], transforms, input_size, output_size, file_name
        )
        if mask.any():
            classes.append(int(annotation["category_id"]))
            masks.append(mask)
    instances = Instances(output_size)
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = _masks_tensor(masks, output_size)
    return instances


def instances_from_panoptic(segment_ids: np.ndarray, segments_info: list[dict]) -> Instances:
    """Panoptic id map (H, W) -> ``Instances`` of the non-crowd, non-empty segments.

    gt_classes are the segments' (contiguous) "category_id"; gt_masks (n, H, W) bool.
    """
    classes, masks = [], []
    for segment in segments_info:
        if segment.get("iscrowd", 0):
            continue
        mask = segment_ids == segment["id"]
        if mask.any():
            classes.append(int(segment["category_id"]))
            masks.append(mask)
    image_size = tuple(segment_ids.shape)
    instances = Instances(image_size)
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = _masks_tensor(masks, image_size)
    return instances


def semantic_from_panoptic(
    segment_ids: np.ndarray, segments_info: list[dict], ignore_label: int
) -> np.ndarray:
    """(H, W) int64 label map: each segment's category, ``ignore_label`` where no segment is."""
    labels = np.full(segment_ids.shape, ignore_label, dtype=np.int64)
    for segment in segments_info:
        labels[segment_ids == segment["id"]] = segment["category_id"]
    return labels


def add_boxes_from_masks(instances: Instances) -> Instances:
    """Set gt_boxes (n, 4) XYXY to the tight boxes of gt_masks."""
    instances.gt_boxes = (
        BitMasks(instances.gt_masks).get_bounding_boxes()
        if len(instances)
        else Boxes(torch.zeros((0, 4)))
    )
    return instances


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (C, H, W) tensor of the same dtype."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
