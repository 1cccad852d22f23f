"""Cityscapes: file naming (leftImg8bit / gtFine_*) for semantic, instance and panoptic splits.

Layout: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with labels in
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{labelTrainIds,instanceIds}.png``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from mask2former.structures.boxes import BoxMode

from .builtin_meta import load_table
from .coco_panoptic import convert_panoptic_segment
from .common import DatasetFormatError, load_json, require_dir, require_files, require_keys

logger = logging.getLogger(__name__)

__all__ = ["load_cityscapes_instances", "load_cityscapes_panoptic", "load_cityscapes_semantic"]

_IMAGE_SUFFIX = "leftImg8bit.png"


def cityscapes_files(image_dir: str, gt_dir: str, gt_suffix: str) -> list[tuple[str, str]]:
    """(image, label) path pairs for every ``*_leftImg8bit.png`` under ``image_dir``'s cities.

    ``gt_suffix`` is e.g. "gtFine_labelTrainIds.png"; a missing label file is an error naming it.
    """
    require_dir(image_dir, "Cityscapes image directory")
    require_dir(gt_dir, "Cityscapes label directory")
    pairs = []
    for city in sorted(os.listdir(image_dir)):
        city_dir = os.path.join(image_dir, city)
        for name in sorted(os.listdir(city_dir)):
            if name.endswith(_IMAGE_SUFFIX):
                base = name[: -len(_IMAGE_SUFFIX)]
                pairs.append(
                    (os.path.join(city_dir, name), os.path.join(gt_dir, city, base + gt_suffix))
                )
    if not pairs:
        raise FileNotFoundError(f"no *_{_IMAGE_SUFFIX} files in the city folders of {image_dir}")
    require_files([label for _, label in pairs], "Cityscapes label file", image_dir)
    return pairs


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> list[dict]:
    """Dicts with file_name, sem_seg_file_name (``*_gtFine_labelTrainIds.png``), height, width."""
    records = []
    for image_file, label_file in cityscapes_files(image_dir, gt_dir, "gtFine_labelTrainIds.png"):
        with Image.open(label_file) as label:  # reads the header only
            width, height = label.size
        records.append(
            {
                "file_name": image_file,
                "sem_seg_file_name": label_file,
                "image_id": os.path.basename(image_file)[: -len(_IMAGE_SUFFIX) - 1],
                "height": height,
                "width": width,
            }
        )
    return records


def _instance_labels() -> tuple[dict[int, int], set[int]]:
    """(label id -> contiguous thing id for the 8 evaluated classes, all ids with instances)."""
    labels = load_table("cityscapes_labels")
    evaluated = [c["id"] for c in labels if c["hasInstances"] and not c["ignoreInEval"]]
    return {lid: i for i, lid in enumerate(evaluated)}, {
        c["id"] for c in labels if c["hasInstances"]
    }


def _instances_of_image(pair: tuple[str, str]) -> dict:
    """One dataset dict from ``*_gtFine_instanceIds.png``: pixel = label id, or id * 1000 + k.

    Values below 1000 on an instance class are crowd regions. Masks are stored as RLE.
    """
    image_file, inst_file = pair
    inst = np.asarray(Image.open(inst_file))
    if inst.ndim != 2:
        raise DatasetFormatError(
            f"{inst_file}: expected a single-channel id image, got {inst.shape}"
        )
    id_map, _ = _instance_labels()
    annotations = []
    for value in np.unique(inst):
        label_id = int(value) // 1000 if value >= 1000 else int(value)
        if label_id not in id_map:
            continue
        mask = inst == value
        ys, xs = np.nonzero(mask)
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "iscrowd": int(value < 1000),
                "category_id": id_map[label_id],
                "bbox": [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() + 1),
                    float(ys.max() + 1),
                ],
                "bbox_mode": BoxMode.XYXY_ABS,
                "segmentation": rle,
                "area": int(mask.sum()),
            }
        )
    return {
        "file_name": image_file,
        "image_id": os.path.basename(image_file)[: -len(_IMAGE_SUFFIX) - 1],
        "height": inst.shape[0],
        "width": inst.shape[1],
        "annotations": annotations,
    }


def load_cityscapes_instances(image_dir: str, gt_dir: str, num_workers: int = 4) -> list[dict]:
    """Dicts with "annotations" read from the ``*_gtFine_instanceIds.png`` files.

    Category ids are contiguous over the 8 evaluated instance classes (person ... bicycle);
    boxes are XYXY_ABS, masks RLE. Large splits are read by ``num_workers`` processes.
    """
    pairs = cityscapes_files(image_dir, gt_dir, "gtFine_instanceIds.png")
    if len(pairs) < 64 or num_workers <= 1:
        return [_instances_of_image(p) for p in pairs]
    with mp.get_context("spawn").Pool(min(num_workers, os.cpu_count() or 1)) as pool:
        return pool.map(_instances_of_image, pairs, chunksize=16)


def load_cityscapes_panoptic(image_dir: str, gt_dir: str, gt_json: str, meta: dict) -> list[dict]:
    """Read the panoptic JSON written by cityscapesscripts' ``createPanopticImgs``.

    Image paths come from the image id (``image_dir/<city>/<image_id>_leftImg8bit.png``), the
    PNG from the annotation's file_name in ``gt_dir``; "sem_seg_file_name" is the train-id map
    ``gtFine/<split>/<city>/<image_id>_gtFine_labelTrainIds.png`` next to ``gt_dir``.
    Segment category ids (Cityscapes label ids) map to train ids through ``meta``.
    """
    data = load_json(gt_json, "Cityscapes panoptic annotation file")
    require_keys(data, ("annotations",), gt_json, "the top level")
    require_dir(image_dir, f"image directory of {gt_json}")
    require_dir(gt_dir, f"panoptic PNG directory of {gt_json}")
    split = os.path.basename(os.path.normpath(image_dir))
    sem_seg_dir = os.path.join(os.path.dirname(os.path.normpath(gt_dir)), split)
    records = []
    for i, ann in enumerate(data["annotations"]):
        require_keys(ann, ("image_id", "file_name", "segments_info"), gt_json, f"annotations[{i}]")
        image_id = ann["image_id"]
        city = image_id.split("_")[0]
        records.append(
            {
                "file_name": os.path.join(image_dir, city, image_id + "_" + _IMAGE_SUFFIX),
                "image_id": image_id,
                "sem_seg_file_name": os.path.join(
                    sem_seg_dir, city, image_id + "_gtFine_labelTrainIds.png"
                ),
                "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
                "segments_info": [
                    convert_panoptic_segment(s, meta, gt_json, image_id)
                    for s in ann["segments_info"]
                ],
            }
        )
    for key, what in (
        ("file_name", "image"),
        ("pan_seg_file_name", "panoptic PNG"),
        ("sem_seg_file_name", "semantic label PNG"),
    ):
        require_files([r[key] for r in records], what, gt_json)
    return records
