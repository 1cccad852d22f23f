"""COCO instance-format annotations (also ADE20K instance): loader and registration helper."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import pycocotools.mask as mask_util

from mask2former.structures.boxes import BoxMode

from ..catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import (
    DatasetFormatError,
    contiguous_category,
    load_json,
    require_dir,
    require_files,
    require_keys,
    thing_id_map,
)

logger = logging.getLogger(__name__)

__all__ = ["load_coco_json", "register_coco_instances"]


def _convert_segmentation(segm: Any, json_file: str, image: str) -> Any:
    """Polygons (flat lists; invalid ones dropped) or a compressed RLE dict; None if empty."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise DatasetFormatError(f"{json_file}: image {image}: RLE without counts/size: {segm}")
        if isinstance(segm["counts"], list):  # uncompressed RLE -> compressed
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm
    if not isinstance(segm, list):
        raise DatasetFormatError(f"{json_file}: image {image}: bad segmentation {segm!r:.80}")
    polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return polygons or None


def _convert_annotation(anno: dict, id_map: dict, json_file: str, image: str) -> dict:
    require_keys(anno, ("bbox", "category_id"), json_file, f"an annotation of image {image}")
    obj = {
        "iscrowd": int(anno.get("iscrowd", 0)),
        "bbox": [float(x) for x in anno["bbox"]],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": contiguous_category(id_map, anno["category_id"], json_file, image),
    }
    if "segmentation" in anno:
        segm = _convert_segmentation(anno["segmentation"], json_file, image)
        if segm is not None:
            obj["segmentation"] = segm
    if "area" in anno:
        obj["area"] = float(anno["area"])
    return obj


def load_coco_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None
) -> list[dict]:
    """Read a COCO instance-format JSON into detectron2 dataset dicts.

    Each dict: file_name, height, width, image_id, annotations (bbox in XYWH_ABS, bbox_mode,
    contiguous category_id, segmentation as polygons or compressed RLE, iscrowd, area).
    Category ids map through ``MetadataCatalog.get(dataset_name)``'s
    ``thing_dataset_id_to_contiguous_id``; without a name or map they are numbered in id order.
    """
    data = load_json(json_file, "COCO instance annotation file")
    require_keys(data, ("images", "annotations", "categories"), json_file, "the top level")
    require_dir(image_root, f"image root of {json_file}")
    meta = MetadataCatalog.get(dataset_name) if dataset_name else Metadata(name=json_file)
    id_map = thing_id_map(data["categories"], json_file, meta)

    annos_per_image: dict[Any, list[dict]] = {}
    for anno in data["annotations"]:
        require_keys(anno, ("image_id",), json_file, "an annotation")
        annos_per_image.setdefault(anno["image_id"], []).append(anno)

    records = []
    for i, img in enumerate(data["images"]):
        require_keys(img, ("id", "file_name", "height", "width"), json_file, f"images[{i}]")
        name = f"{img['file_name']} (id {img['id']})"
        records.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": int(img["height"]),
                "width": int(img["width"]),
                "image_id": img["id"],
                "annotations": [
                    _convert_annotation(a, id_map, json_file, name)
                    for a in annos_per_image.get(img["id"], [])
                ],
            }
        )
    require_files([r["file_name"] for r in records], "image", json_file)
    logger.info("Loaded %d images in COCO format from %s", len(records), json_file)
    return records


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a COCO instance-format dataset: ``DatasetCatalog.get(name)`` reads ``json_file``.

    ``metadata`` may be ``{}``: the class names are then taken from the file on first load.
    Sets evaluator_type "coco" unless ``metadata`` says otherwise.
    """
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=metadata.get("evaluator_type", "coco"),
        **{k: v for k, v in metadata.items() if k != "evaluator_type"},
    )
