#!/usr/bin/env python
"""ADE20K instance segmentation (100 thing classes) as COCO instance JSON with RLE masks.

Reads   ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
            (R = instance class 1..100, G = instance index, 0 = none)
        ade20k_instance_catid_mapping.txt (beside this script)
Writes  ADEChallengeData2016/ade20k_instance_{train,val}.json
        (category ids are the 0-based 150-class ids, as in the panoptic annotations)
"""

from __future__ import annotations

import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from prepare_common import (
    argument_parser,
    load_ade20k_instance_mapping,
    require_dir,
    run_parallel,
    write_json,
)

from mask2former.data.datasets.builtin_meta import load_table
from mask2former.data.datasets.common import bbox_xywh

SPLITS = {"train": "training", "val": "validation"}


def ade_instances(
    instance_rgb: np.ndarray, ins_to_150: dict[int, int]
) -> list[tuple[int, np.ndarray]]:
    """(H, W, 3) uint8 instance annotation -> [(0-based 150-class id, (H, W) bool mask)].

    One entry per non-zero instance index (G); its class (R) must be the same on all its pixels.
    """
    classes, instances = instance_rgb[..., 0], instance_rgb[..., 1]
    result = []
    for index in np.unique(instances):
        if index == 0:
            continue
        mask = instances == index
        cls = np.unique(classes[mask])
        if len(cls) != 1 or int(cls[0]) not in ins_to_150:
            raise ValueError(
                f"instance {index} has class values {cls.tolist()}; expected one of 1..100"
            )
        result.append((ins_to_150[int(cls[0])], mask))
    return result


def instance_annotations(stem: str, instance_png: str, ins_to_150: dict[int, int]) -> list[dict]:
    """COCO annotations (without "id") of one image."""
    rgb = np.asarray(Image.open(instance_png).convert("RGB"))
    try:
        instances = ade_instances(rgb, ins_to_150)
    except ValueError as e:
        raise ValueError(f"{instance_png}: {e}") from e
    annotations = []
    for category_id, mask in instances:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "image_id": stem,
                "category_id": category_id,
                "iscrowd": 0,
                "bbox": bbox_xywh(mask),
                "area": int(mask.sum()),
                "segmentation": rle,
            }
        )
    return annotations


def image_entry(image_file: str) -> dict:
    with Image.open(image_file) as image:  # header only
        width, height = image.size
    stem = os.path.splitext(os.path.basename(image_file))[0]
    return {"id": stem, "file_name": os.path.basename(image_file), "width": width, "height": height}


def _one(image_file: str, instance_png: str, ins_to_150: dict[int, int]) -> tuple[dict, list[dict]]:
    image = image_entry(image_file)
    return image, instance_annotations(image["id"], instance_png, ins_to_150)


def main(root: str, workers: int) -> None:
    base = os.path.join(root, "ADEChallengeData2016")
    ins_to_150 = load_ade20k_instance_mapping()
    categories = [{"id": c["id"], "name": c["name"]} for c in load_table("ade20k_instance_100")]
    for name, dirname in SPLITS.items():
        image_dir = os.path.join(base, "images", dirname)
        instance_dir = os.path.join(base, "annotations_instance", dirname)
        require_dir(instance_dir, "unpack annotations_instance.tar into ADEChallengeData2016")
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(image_dir) if n.endswith(".jpg"))
        jobs = [
            (
                os.path.join(image_dir, s + ".jpg"),
                os.path.join(instance_dir, s + ".png"),
                ins_to_150,
            )
            for s in stems
        ]
        results = run_parallel(_one, jobs, workers, f"ADE20K instance {name}")
        annotations = [a for _, annos in results for a in annos]
        for i, anno in enumerate(annotations):
            anno["id"] = i + 1
        data = {
            "images": [img for img, _ in results],
            "annotations": annotations,
            "categories": categories,
        }
        write_json(data, os.path.join(base, f"ade20k_instance_{name}.json"))


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
