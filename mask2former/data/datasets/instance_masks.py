"""One binary mask PNG per instance (layout (d) of a dataset folder), read as detectron2
dataset dicts or written as a COCO instance JSON::

    images/<stem>.jpg
    masks/<stem>/<class>_<k>.png    # <class>: a thing class name; <k>: any tag, e.g. 0, 1, 2

A mask's non-zero pixels are the instance. An image without a ``masks/<stem>/`` folder has no
instances.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
import shapely
from PIL import Image

from ...structures import BoxMode
from ..detection_utils import read_image
from .common import DatasetFormatError, bbox_xywh, images_by_stem

logger = logging.getLogger(__name__)

__all__ = [
    "encode_mask",
    "image_size",
    "instance_mask_files",
    "load_instance_masks",
    "masks_to_coco",
    "parse_mask_name",
    "read_mask",
]


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    with Image.open(path) as image:
        width, height = image.size
    return height, width


def parse_mask_name(path: str, class_names: Sequence[str]) -> str:
    """The class of ``masks/<stem>/<class>_<k>.png``; an unknown class is an error naming it."""
    stem = os.path.splitext(os.path.basename(path))[0]
    class_name, sep, _ = stem.rpartition("_")
    if not sep or class_name not in class_names:
        raise DatasetFormatError(
            f"{path}: a mask file is named <class>_<k>.png with <class> one of "
            f"{list(class_names)}; got {os.path.basename(path)!r}"
        )
    return class_name


def read_mask(path: str) -> np.ndarray:
    """(H, W) bool: the non-zero pixels of a mask PNG (any channel, alpha excluded)."""
    array = read_image(path)
    if array.ndim == 3:
        array = array[..., :3].any(-1) if array.shape[-1] in (3, 4) else array[..., 0]
    return array != 0


def mask_dirs(masks_dir: str) -> dict[str, str]:
    """Image stem -> folder, for every folder under ``masks_dir`` that holds a PNG."""
    found = {}
    for dirpath, _, names in os.walk(masks_dir):
        if any(n.lower().endswith(".png") for n in names):
            found[os.path.relpath(dirpath, masks_dir)] = dirpath
    return found


def instance_mask_files(masks_dir: str, images: dict[str, str]) -> dict[str, list[str]]:
    """Image stem -> its mask files, sorted; a mask folder without an image is an error."""
    dirs = mask_dirs(masks_dir)
    orphans = sorted(set(dirs) - set(images))
    if orphans:
        raise DatasetFormatError(
            f"{len(orphans)} mask folder(s) have no image of the same name; first: "
            f"{dirs[orphans[0]]}"
        )
    return {
        stem: sorted(
            os.path.join(dirs[stem], n)
            for n in os.listdir(dirs[stem])
            if n.lower().endswith(".png")
        )
        for stem in images
        if stem in dirs
    }


def _checked_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    mask = read_mask(path)
    if mask.shape != size:
        raise DatasetFormatError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but its image "
            f"is {size[1]}x{size[0]}"
        )
    if not mask.any():
        raise DatasetFormatError(f"{path}: the mask is empty")
    return mask


def _outlines(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (pixel-edge coordinates) of the outer boundaries of an (H, W) bool mask.

    OpenCV traces boundary pixel centres; growing that trace by half a pixel (square caps,
    mitred joins) gives the pixel edges, so the polygons rasterize back to the mask (holes
    aside) for pycocotools.
    """
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        centres = contour.reshape(-1, 2) + 0.5
        if len(centres) == 1:
            trace = shapely.Point(centres[0])
        elif len(centres) == 2:
            trace = shapely.LineString(centres)
        else:
            trace = shapely.make_valid(shapely.Polygon(centres))
        grown = trace.buffer(0.5, cap_style="square", join_style="mitre")
        for part in getattr(grown, "geoms", [grown]):
            polygons.append(np.asarray(part.exterior.coords)[:-1].ravel().tolist())
    return polygons


def encode_mask(mask: np.ndarray, polygons: bool = False) -> Any:
    """A COCO segmentation of an (H, W) bool mask: compressed RLE (counts as str), or polygons
    of its outer boundaries (exact but for holes, which polygons cannot hold)."""
    if polygons:
        return _outlines(mask)
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _instances(
    stem: str, files: list[str], size: tuple[int, int], class_names: Sequence[str]
) -> list[tuple[int, np.ndarray]]:
    """(index in ``class_names``, mask) of each instance of one image."""
    return [
        (class_names.index(parse_mask_name(f, class_names)), _checked_mask(f, size)) for f in files
    ]


def load_instance_masks(
    masks_dir: str, images_dir: str, thing_classes: Sequence[str]
) -> list[dict]:
    """Dataset dicts of the images under ``images_dir`` with their instance masks.

    Each dict: file_name, height, width, image_id (position in name order, as the JSON of
    :func:`masks_to_coco`), annotations (RLE segmentation, XYWH_ABS bbox, category_id = the
    class's index in ``thing_classes``, iscrowd 0, area).
    """
    images = images_by_stem(images_dir)
    files = instance_mask_files(masks_dir, images)
    records = []
    for image_id, (stem, path) in enumerate(images.items()):
        size = image_size(path)
        annotations = [
            {
                "bbox": [float(v) for v in bbox_xywh(mask)],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": class_id,
                "segmentation": encode_mask(mask),
                "iscrowd": 0,
                "area": float(mask.sum()),
            }
            for class_id, mask in _instances(stem, files.get(stem, []), size, thing_classes)
        ]
        records.append(
            {
                "file_name": path,
                "height": size[0],
                "width": size[1],
                "image_id": image_id,
                "annotations": annotations,
            }
        )
    logger.info("Loaded %d images with instance masks from %s", len(records), masks_dir)
    return records


def masks_to_coco(
    masks_dir: str, images_dir: str, categories: list[dict], polygons: bool = False
) -> dict:
    """A COCO instance JSON (dict) of the mask PNGs; ``categories``: [{"id", "name", ...}]
    (a mask's class is looked up by name). Image ids are positions in name order; file names
    are relative to ``images_dir``."""
    names = [c["name"] for c in categories]
    images = images_by_stem(images_dir)
    files = instance_mask_files(masks_dir, images)
    image_entries, annotations = [], []
    for image_id, (stem, path) in enumerate(images.items()):
        height, width = image_size(path)
        image_entries.append(
            {
                "id": image_id,
                "file_name": os.path.relpath(path, images_dir),
                "height": height,
                "width": width,
            }
        )
        for class_id, mask in _instances(stem, files.get(stem, []), (height, width), names):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[class_id]["id"],
                    "segmentation": encode_mask(mask, polygons),
                    "area": int(mask.sum()),
                    "bbox": bbox_xywh(mask),
                    "iscrowd": 0,
                }
            )
    return {"images": image_entries, "annotations": annotations, "categories": categories}
