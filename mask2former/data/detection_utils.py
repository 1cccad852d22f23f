"""Reading images and label maps, moving annotations with transforms, making ``Instances``.

The functions of detectron2's ``detection_utils`` that the published mappers use, with its
semantics (``read_image``, ``check_image_size``, ``transform_instance_annotations``,
``annotations_to_instances``, ``filter_empty_instances``, ``build_augmentation``). Every
problem with a sample's files or annotations raises :class:`BadSampleError`, whose message
starts with the file name; ``MapDataset`` may skip such samples when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageOps

from ..structures import Boxes, BoxMode, Instances, PolygonMasks, polygons_to_bitmask
from ..utils.file_io import PathManager
from .transforms import Augmentation, RandomFlip, ResizeShortestEdge, TransformList

__all__ = [
    "IMAGE_FORMATS",
    "MASK_FORMATS",
    "BadSampleError",
    "annotations_to_instances",
    "build_augmentation",
    "check_image_size",
    "check_label_size",
    "check_label_values",
    "decode_segmentation",
    "filter_empty_instances",
    "image_to_tensor",
    "polygons_to_bitmask",
    "random_flip_from_config",
    "read_image",
    "read_label_map",
    "semantic_from_panoptic",
    "shortest_edge_resize",
    "transform_instance_annotations",
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
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError:
        raise BadSampleError(file_name, "file not found") from None
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
        file_name: a path or URL (anything the package's ``PathManager`` opens).
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
    """Read a semantic label map (8- or 16-bit PNG / TIFF, palette indices as stored) as an
    (H, W) float64 array, as the published mappers do: the transforms then move it with
    torch's nearest-neighbour resize, not PIL's."""
    labels = read_image(file_name)
    if labels.ndim != 2:
        raise BadSampleError(
            file_name, f"a label map must have one channel, got shape {labels.shape}"
        )
    return labels.astype(np.float64)


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Raise if ``image`` (H, W, C) disagrees with the dict's "height" / "width"; set them
    from the image where the dict has none (predictions are resized back to them)."""
    height, width = image.shape[:2]
    expected = (dataset_dict.get("height", height), dataset_dict.get("width", width))
    if expected != (height, width):
        raise BadSampleError(
            dataset_dict.get("file_name", "<image>"),
            f"image is {width}x{height} (width x height) but its annotation says "
            f"{expected[1]}x{expected[0]}",
        )
    dataset_dict.setdefault("height", height)
    dataset_dict.setdefault("width", width)


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
        values = [int(v) for v in np.unique(labels[bad])[:5]]
        raise BadSampleError(
            label_file,
            f"label values {values} are outside 0..{num_classes - 1} "
            f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES) and are not the ignore label {ignore_label}",
        )


def _checked_polygons(polygons: Sequence, file_name: str) -> list[np.ndarray]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] as flat arrays (dtype as given), validated."""
    try:
        flat = [np.asarray(p).reshape(-1) for p in polygons]
    except (TypeError, ValueError) as e:
        raise BadSampleError(file_name, f"malformed polygon ({e})") from e
    for p in flat:
        if len(p) < 6 or len(p) % 2 or not np.issubdtype(p.dtype, np.number):
            raise BadSampleError(file_name, f"malformed polygon with {len(p)} coordinates")
    return flat


def decode_segmentation(segmentation: Any, height: int, width: int, file_name: str) -> np.ndarray:
    """A COCO RLE dict (compressed or not) or an (H, W) array -> (H, W) uint8 mask."""
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
        try:
            mask = mask_util.decode(segmentation)
        except (TypeError, ValueError, KeyError) as e:
            raise BadSampleError(file_name, f"malformed RLE segmentation ({e})") from e
    elif isinstance(segmentation, np.ndarray) and segmentation.ndim == 2:
        mask = segmentation.astype(np.uint8)
    else:
        raise BadSampleError(
            file_name,
            f"segmentation must be polygons, a COCO RLE dict or an (H, W) array, got "
            f"{type(segmentation).__name__}",
        )
    if mask.shape != (height, width):
        raise BadSampleError(
            file_name, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"
        )
    return mask


def _bbox_mode(annotation: dict, file_name: str) -> BoxMode:
    if "bbox_mode" not in annotation:
        raise BadSampleError(file_name, f"annotation has a 'bbox' but no 'bbox_mode': {annotation}")
    return BoxMode(annotation["bbox_mode"])


def transform_instance_annotations(
    annotation: dict,
    transforms: TransformList,
    image_size: tuple[int, int],
    *,
    input_size: tuple[int, int] | None = None,
    file_name: str = "",
) -> dict:
    """Move one instance annotation with ``transforms`` (detectron2's semantics).

    "bbox" (when present) becomes the transformed XYXY_ABS box clipped to ``image_size``
    (h, w); polygons are transformed as points (clipped by crops), list of flat arrays;
    an RLE or array mask is decoded at ``input_size`` (the size before the transforms;
    default: the RLE's own size) and moved with ``apply_segmentation``. Modifies and returns
    ``annotation``.
    """
    if "bbox" in annotation:
        bbox = BoxMode.convert(
            annotation["bbox"], _bbox_mode(annotation, file_name), BoxMode.XYXY_ABS
        )
        bbox = transforms.apply_box(np.array([bbox], dtype=np.float64))[0].clip(min=0)
        annotation["bbox"] = np.minimum(bbox, list(image_size + image_size)[::-1])
        annotation["bbox_mode"] = BoxMode.XYXY_ABS
    if "segmentation" not in annotation:
        return annotation
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        polygons = [p.reshape(-1, 2) for p in _checked_polygons(segmentation, file_name)]
        moved = transforms.apply_polygons(polygons)
        annotation["segmentation"] = [p.reshape(-1) for p in moved]
        return annotation
    if input_size is None and isinstance(segmentation, dict):
        input_size = tuple(segmentation.get("size", (0, 0)))
    if input_size is None:
        input_size = segmentation.shape[:2]
    mask = decode_segmentation(segmentation, *input_size, file_name)
    mask = transforms.apply_segmentation(mask)
    if mask.shape[:2] != tuple(image_size):
        raise BadSampleError(
            file_name, f"a transformed mask is {mask.shape[:2]}, the image {tuple(image_size)}"
        )
    annotation["segmentation"] = mask
    return annotation


MASK_FORMATS = ("polygon", "bitmask")


def annotations_to_instances(
    annotations: list[dict],
    image_size: tuple[int, int],
    mask_format: str = "polygon",
    *,
    file_name: str = "",
) -> Instances:
    """Transformed instance annotations -> ``Instances`` (detectron2's semantics).

    gt_classes (n,) int64 from "category_id"; gt_boxes from "bbox" (XYXY_ABS, clipped) when
    every annotation has one; gt_masks from "segmentation": :class:`PolygonMasks` for
    ``mask_format`` "polygon" (annotations must be polygons), an (n, H, W) bool tensor
    (:class:`BitMasks` layout) for "bitmask".
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"INPUT.MASK_FORMAT must be one of {MASK_FORMATS}, got {mask_format!r}")
    instances = Instances(image_size)
    if annotations and all("bbox" in a for a in annotations):
        xyxy = [
            BoxMode.convert(a["bbox"], _bbox_mode(a, file_name), BoxMode.XYXY_ABS)
            for a in annotations
        ]
        boxes = Boxes(torch.as_tensor(np.stack(xyxy), dtype=torch.float32))
        boxes.clip(image_size)
        instances.gt_boxes = boxes
    instances.gt_classes = torch.tensor(
        [int(a["category_id"]) for a in annotations], dtype=torch.int64
    )
    if not annotations or "segmentation" not in annotations[0]:
        return instances
    segmentations = [a["segmentation"] for a in annotations]
    if mask_format == "polygon":
        if not all(isinstance(s, list) for s in segmentations):
            raise BadSampleError(
                file_name, "INPUT.MASK_FORMAT 'polygon' needs polygon annotations; use 'bitmask'"
            )
        instances.gt_masks = PolygonMasks(segmentations)
        return instances
    masks = [
        (
            polygons_to_bitmask(s, *image_size)
            if isinstance(s, list)
            else decode_segmentation(s, *image_size, file_name).astype(bool)
        )
        for s in segmentations
    ]
    instances.gt_masks = torch.from_numpy(np.stack(masks))
    return instances


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
):
    """Drop instances whose box is no wider or taller than ``box_threshold`` (``by_box``) or
    whose mask is empty (``by_mask``); with ``return_mask`` also the (n,) bool kept."""
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box and instances.has("gt_boxes"):
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        masks = instances.gt_masks
        keep &= masks.nonempty() if hasattr(masks, "nonempty") else masks.flatten(1).any(dim=1)
    kept = instances[keep]
    return (kept, keep) if return_mask else kept


def shortest_edge_resize(cfg, is_train: bool) -> ResizeShortestEdge:
    """The shortest-edge resize: INPUT.MIN/MAX_SIZE_TRAIN with MIN_SIZE_TRAIN_SAMPLING when
    training, INPUT.MIN/MAX_SIZE_TEST ("choice") otherwise."""
    if is_train:
        return ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    return ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")


def build_augmentation(cfg, is_train: bool) -> list[Augmentation]:
    """detectron2's default augmentation: the shortest-edge resize, plus INPUT.RANDOM_FLIP when
    training."""
    augmentations: list[Augmentation] = [shortest_edge_resize(cfg, is_train)]
    flip = random_flip_from_config(cfg) if is_train else None
    return augmentations + ([flip] if flip is not None else [])


RANDOM_FLIP_MODES = ("horizontal", "vertical", "none")


def random_flip_from_config(cfg) -> RandomFlip | None:
    """``INPUT.RANDOM_FLIP``: a horizontal or vertical :class:`RandomFlip`, or None for "none"."""
    mode = cfg.INPUT.RANDOM_FLIP
    if mode not in RANDOM_FLIP_MODES:
        raise ValueError(f"INPUT.RANDOM_FLIP must be one of {RANDOM_FLIP_MODES}, got {mode!r}")
    if mode == "none":
        return None
    return RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")


def semantic_from_panoptic(
    segment_ids: np.ndarray, segments_info: list[dict], ignore_label: int
) -> np.ndarray:
    """(H, W) int64 label map: each segment's category, ``ignore_label`` where no segment is."""
    labels = np.full(segment_ids.shape, ignore_label, dtype=np.int64)
    for segment in segments_info:
        labels[segment_ids == segment["id"]] = segment["category_id"]
    return labels


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (C, H, W) tensor of the same dtype."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
