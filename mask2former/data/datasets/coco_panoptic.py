"""COCO panoptic format (JSON + PNG, segment id = R + 256 G + 256^2 B): loader and registration.

Also used for ADE20K, Mapillary Vistas and the synthetic shapes panoptic annotations.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from ..catalog import DatasetCatalog, MetadataCatalog
from .common import (
    DatasetFormatError,
    contiguous_category,
    load_json,
    require_dir,
    require_files,
    require_keys,
)

logger = logging.getLogger(__name__)

__all__ = [
    "convert_panoptic_segment",
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_coco_panoptic_with_sem_seg",
]


def convert_panoptic_segment(seg: dict, meta: dict, json_file: str, image: str) -> dict:
    """One segments_info entry with its dataset category id made contiguous.

    ``isthing`` is whether ``meta``'s thing map holds the id; an id in neither map is an error
    naming ``json_file``, ``image`` and the id.
    """
    require_keys(seg, ("id", "category_id"), json_file, f"a segment of image {image}")
    things = meta["thing_dataset_id_to_contiguous_id"]
    if seg["category_id"] in things:
        category_id, isthing = things[seg["category_id"]], True
    else:
        stuff = meta["stuff_dataset_id_to_contiguous_id"]
        category_id = contiguous_category(stuff, seg["category_id"], json_file, image)
        isthing = False
    return {
        "id": int(seg["id"]),
        "category_id": category_id,
        "iscrowd": int(seg.get("iscrowd", 0)),
        "area": int(seg.get("area", 0)),
        "isthing": isthing,
    }


def _image_entries(data: dict, json_file: str) -> dict[Any, dict]:
    images = {}
    for i, img in enumerate(data.get("images", [])):
        require_keys(img, ("id", "file_name"), json_file, f"images[{i}]")
        images[img["id"]] = img
    return images


def _record(
    ann: dict,
    img: Optional[dict],
    image_dir: str,
    gt_dir: str,
    sem_seg_dir: Optional[str],
    meta: dict,
    json_file: str,
) -> dict:
    stem = os.path.splitext(ann["file_name"])[0]
    # the images list gives the real file name; without one, COCO's convention is <stem>.jpg
    image_file = img["file_name"] if img is not None else stem + ".jpg"
    name = f"{image_file} (id {ann['image_id']})"
    record = {
        "file_name": os.path.join(image_dir, image_file),
        "image_id": ann["image_id"],
        "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
        "segments_info": [
            convert_panoptic_segment(s, meta, json_file, name) for s in ann["segments_info"]
        ],
    }
    if img is not None and "height" in img and "width" in img:
        record["height"], record["width"] = int(img["height"]), int(img["width"])
    if sem_seg_dir is not None:
        record["sem_seg_file_name"] = os.path.join(sem_seg_dir, ann["file_name"])
    return record


def load_coco_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, meta: dict, sem_seg_dir: Optional[str] = None
) -> list[dict]:
    """Read a COCO panoptic JSON into detectron2 dataset dicts.

    Args:
        json_file: the panoptic JSON ("images", "annotations" with "segments_info", ...).
        image_dir: directory of the images; gt_dir: directory of the panoptic PNGs.
        meta: needs ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id``.
        sem_seg_dir: if given, each dict gets "sem_seg_file_name" (same PNG name in that dir).

    Returns dicts with file_name, image_id, height, width (when the JSON lists them),
    pan_seg_file_name and segments_info [{id, category_id (contiguous), iscrowd, area, isthing}].
    """
    data = load_json(json_file, "COCO panoptic annotation file")
    require_keys(data, ("annotations",), json_file, "the top level")
    require_dir(image_dir, f"image directory of {json_file}")
    require_dir(gt_dir, f"panoptic PNG directory of {json_file}")
    images = _image_entries(data, json_file)
    records = []
    for i, ann in enumerate(data["annotations"]):
        require_keys(
            ann, ("image_id", "file_name", "segments_info"), json_file, f"annotations[{i}]"
        )
        records.append(
            _record(
                ann, images.get(ann["image_id"]), image_dir, gt_dir, sem_seg_dir, meta, json_file
            )
        )
    if not records:
        raise DatasetFormatError(f"{json_file}: no annotations")
    require_files([r["file_name"] for r in records], "image", json_file)
    require_files([r["pan_seg_file_name"] for r in records], "panoptic PNG", json_file)
    if sem_seg_dir is not None:
        require_files([r["sem_seg_file_name"] for r in records], "semantic label PNG", json_file)
    logger.info("Loaded %d images in COCO panoptic format from %s", len(records), json_file)
    return records


def register_coco_panoptic(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: Optional[str] = None,
) -> None:
    """Register a COCO panoptic-format dataset under ``name``.

    ``metadata`` must hold the class lists and both id maps (``thing_dataset_id_to_contiguous_id``
    and ``stuff_dataset_id_to_contiguous_id``); evaluator_type defaults to "coco_panoptic_seg",
    ignore_label to 255 and label_divisor to 1000.
    """
    _register_panoptic(
        name, metadata, image_root, panoptic_root, panoptic_json, None, instances_json
    )


def register_coco_panoptic_with_sem_seg(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: Optional[str] = None,
) -> None:
    """As :func:`register_coco_panoptic`, each dict also naming its semantic label PNG."""
    _register_panoptic(
        name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json
    )


def _register_panoptic(
    name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json
) -> None:
    for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
        if key not in metadata:
            raise KeyError(f"register_coco_panoptic({name!r}): metadata needs {key!r}")
    DatasetCatalog.register(
        name,
        lambda: load_coco_panoptic_json(
            panoptic_json, image_root, panoptic_root, metadata, sem_seg_root
        ),
    )
    fields = dict(evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000)
    fields.update(metadata)
    fields.update(image_root=image_root, panoptic_root=panoptic_root, panoptic_json=panoptic_json)
    if sem_seg_root is not None:
        fields["sem_seg_root"] = sem_seg_root
    if instances_json is not None:
        fields["json_file"] = instances_json
    MetadataCatalog.get(name).set(**fields)
