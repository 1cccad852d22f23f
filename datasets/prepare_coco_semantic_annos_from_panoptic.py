#!/usr/bin/env python
"""COCO semantic labels (133 classes) from the panoptic annotations.

Reads   coco/annotations/panoptic_{train,val}2017.json, coco/panoptic_{train,val}2017/*.png
Writes  coco/panoptic_semseg_{train,val}2017/*.png   (contiguous ids 0..132, 255 = unlabeled)
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from prepare_common import argument_parser, require_dir, run_parallel

from mask2former.data.datasets.builtin_meta import coco_panoptic_meta
from mask2former.utils.panoptic_png import rgb2id


def panoptic_to_semantic(
    panoptic_rgb: np.ndarray, segments_info: list[dict], id_map: dict[int, int]
) -> np.ndarray:
    """(H, W, 3) panoptic PNG + its segments -> (H, W) uint8 contiguous class ids, 255 elsewhere.

    Crowd segments get their class too; pixels in no segment stay 255.
    """
    ids = rgb2id(panoptic_rgb)
    semantic = np.full(ids.shape, 255, dtype=np.uint8)
    for seg in segments_info:
        if seg["category_id"] not in id_map:
            raise KeyError(f"segment {seg['id']} has unknown category id {seg['category_id']}")
        semantic[ids == seg["id"]] = id_map[seg["category_id"]]
    return semantic


def convert_file(src: str, segments_info: list[dict], id_map: dict[int, int], dst: str) -> None:
    rgb = np.asarray(Image.open(src).convert("RGB"))
    try:
        semantic = panoptic_to_semantic(rgb, segments_info, id_map)
    except KeyError as e:
        raise KeyError(f"{src}: {e.args[0]}") from e
    Image.fromarray(semantic).save(dst)


def main(root: str, workers: int) -> None:
    id_map = coco_panoptic_meta()["stuff_dataset_id_to_contiguous_id"]
    for split in ("train2017", "val2017"):
        json_file = os.path.join(root, "coco", "annotations", f"panoptic_{split}.json")
        pan_dir = os.path.join(root, "coco", f"panoptic_{split}")
        require_dir(
            pan_dir, "unpack panoptic_annotations_trainval2017.zip (and the PNG zips inside)"
        )
        out_dir = os.path.join(root, "coco", f"panoptic_semseg_{split}")
        os.makedirs(out_dir, exist_ok=True)
        with open(json_file) as f:
            annotations = json.load(f)["annotations"]
        jobs = [
            (
                os.path.join(pan_dir, a["file_name"]),
                a["segments_info"],
                id_map,
                os.path.join(out_dir, a["file_name"]),
            )
            for a in annotations
        ]
        run_parallel(convert_file, jobs, workers, f"COCO {split}")


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
