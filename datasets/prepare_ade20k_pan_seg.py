#!/usr/bin/env python
"""ADE20K panoptic segmentation (150 classes, 100 things) in COCO panoptic format.

Stuff segments come from the semantic annotation, thing segments from the instance
annotation (pasted over stuff). Pixels of thing classes outside any instance are void.

Reads   ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations/{training,validation}/*.png     (0 = other, 1..150)
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
Writes  ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png  (id = R + 256 G + 256^2 B)
        ADEChallengeData2016/ade20k_panoptic_{train,val}.json
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from prepare_ade20k_ins_seg import SPLITS, ade_instances, image_entry
from prepare_common import (
    argument_parser,
    load_ade20k_instance_mapping,
    require_dir,
    run_parallel,
    write_json,
)

from mask2former.data.datasets.builtin_meta import load_table
from mask2former.data.datasets.common import bbox_xywh
from mask2former.utils.panoptic_png import id2rgb


def ade_panoptic(
    semantic: np.ndarray, instance_rgb: np.ndarray, isthing: list[bool], ins_to_150: dict[int, int]
) -> tuple[np.ndarray, list[dict]]:
    """(H, W) uint8 semantic (0 = other, 1..150) + (H, W, 3) instance annotation ->
    ((H, W) int64 segment ids, 0 = void; segments_info with 0-based 150-class category ids).
    """
    ids = np.zeros(semantic.shape, np.int64)
    categories = {}
    for cls in np.unique(semantic):
        if cls == 0 or isthing[cls - 1]:
            continue
        categories[len(categories) + 1] = int(cls) - 1
        ids[semantic == cls] = len(categories)
    for category_id, mask in ade_instances(instance_rgb, ins_to_150):
        categories[len(categories) + 1] = category_id
        ids[mask] = len(categories)
    segments_info = []
    for segment_id, category_id in categories.items():
        mask = ids == segment_id
        if mask.any():  # a stuff region may be covered entirely by things
            segments_info.append(
                {
                    "id": segment_id,
                    "category_id": category_id,
                    "iscrowd": 0,
                    "area": int(mask.sum()),
                    "bbox": bbox_xywh(mask),
                }
            )
    return ids, segments_info


def _one(image_file, semantic_png, instance_png, out_png, isthing, ins_to_150):
    image = image_entry(image_file)
    semantic = np.asarray(Image.open(semantic_png))
    instance_rgb = np.asarray(Image.open(instance_png).convert("RGB"))
    if semantic.shape != instance_rgb.shape[:2]:
        raise ValueError(
            f"{semantic_png} is {semantic.shape}, {instance_png} is {instance_rgb.shape[:2]}"
        )
    try:
        ids, segments_info = ade_panoptic(semantic, instance_rgb, isthing, ins_to_150)
    except ValueError as e:
        raise ValueError(f"{instance_png}: {e}") from e
    Image.fromarray(id2rgb(ids)).save(out_png)
    annotation = {
        "image_id": image["id"],
        "file_name": os.path.basename(out_png),
        "segments_info": segments_info,
    }
    return image, annotation


def main(root: str, workers: int) -> None:
    base = os.path.join(root, "ADEChallengeData2016")
    categories = load_table("ade20k_panoptic_150")
    isthing = [bool(c["isthing"]) for c in categories]
    ins_to_150 = load_ade20k_instance_mapping()
    for name, dirname in SPLITS.items():
        image_dir = os.path.join(base, "images", dirname)
        require_dir(
            os.path.join(base, "annotations_instance", dirname),
            "unpack annotations_instance.tar into ADEChallengeData2016",
        )
        out_dir = os.path.join(base, f"ade20k_panoptic_{name}")
        os.makedirs(out_dir, exist_ok=True)
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(image_dir) if n.endswith(".jpg"))
        jobs = [
            (
                os.path.join(image_dir, s + ".jpg"),
                os.path.join(base, "annotations", dirname, s + ".png"),
                os.path.join(base, "annotations_instance", dirname, s + ".png"),
                os.path.join(out_dir, s + ".png"),
                isthing,
                ins_to_150,
            )
            for s in stems
        ]
        results = run_parallel(_one, jobs, workers, f"ADE20K panoptic {name}")
        data = {
            "images": [r[0] for r in results],
            "annotations": [r[1] for r in results],
            "categories": categories,
        }
        write_json(data, os.path.join(base, f"ade20k_panoptic_{name}.json"))


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
