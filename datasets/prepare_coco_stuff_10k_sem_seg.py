#!/usr/bin/env python
"""COCO-Stuff-10K (171 classes): MATLAB label files to PNGs of contiguous ids.

Reads   coco/coco_stuff_10k/{images/*.jpg, annotations/*.mat, imageLists/{train,test}.txt}
Writes  coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
        coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png  (0..170, 255 = unlabeled)
"""

from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image
from prepare_common import argument_parser, require_dir, run_parallel
from scipy.io import loadmat

from mask2former.data.datasets.builtin_meta import coco_stuff_meta


def convert_label(label: np.ndarray, id_map: dict[int, int]) -> np.ndarray:
    """(H, W) COCO category ids (0 = unlabeled) -> uint8 contiguous ids, 255 where unmapped."""
    lut = np.full(max(256, int(label.max()) + 1), 255, dtype=np.uint8)
    for dataset_id, contiguous in id_map.items():
        lut[dataset_id] = contiguous
    return lut[label.astype(np.int64)]


def convert_one(stem: str, base: str, split: str, id_map: dict[int, int]) -> None:
    shutil.copyfile(
        os.path.join(base, "images", stem + ".jpg"),
        os.path.join(base, "images_detectron2", split, stem + ".jpg"),
    )
    mat_file = os.path.join(base, "annotations", stem + ".mat")
    mat = loadmat(mat_file)
    if "S" not in mat:
        raise KeyError(f"{mat_file}: no label map 'S' (keys: {sorted(mat)})")
    label = convert_label(mat["S"], id_map)
    Image.fromarray(label).save(os.path.join(base, "annotations_detectron2", split, stem + ".png"))


def main(root: str, workers: int) -> None:
    base = os.path.join(root, "coco", "coco_stuff_10k")
    require_dir(
        os.path.join(base, "annotations"), "unpack cocostuff-10k-v1.1.zip into coco/coco_stuff_10k"
    )
    id_map = coco_stuff_meta()["stuff_dataset_id_to_contiguous_id"]
    for split in ("train", "test"):
        for sub in ("images_detectron2", "annotations_detectron2"):
            os.makedirs(os.path.join(base, sub, split), exist_ok=True)
        with open(os.path.join(base, "imageLists", f"{split}.txt")) as f:
            stems = [line.strip() for line in f if line.strip()]
        run_parallel(
            convert_one,
            [(s, base, split, id_map) for s in stems],
            workers,
            f"COCO-Stuff-10K {split}",
        )


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
