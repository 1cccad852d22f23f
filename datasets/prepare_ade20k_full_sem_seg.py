#!/usr/bin/env python
"""ADE20K-full (847 classes): images and 16-bit TIFF labels of train ids, shorter side <= 512.

Reads   ADE20K_2021_17_01/index_ade20k.pkl and the images / *_seg.png files it lists
        (class of a pixel = R / 10 * 256 + G of the _seg.png)
Writes  ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
        ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif
            (16-bit train ids 0..846, 65535 = ignore)
"""

from __future__ import annotations

import os
import pickle

import cv2
import numpy as np
from PIL import Image
from prepare_common import argument_parser, require_dir, run_parallel

from mask2former.data.datasets.builtin_meta import ade20k_full_sem_seg_meta

IGNORE = 65535
MAX_SHORT_SIDE = 512


def class_mask(seg_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 ADE20K ``_seg.png`` -> (H, W) int32 full-ADE class ids."""
    return (seg_rgb[..., 0].astype(np.int32) // 10) * 256 + seg_rgb[..., 1].astype(np.int32)


def to_train_ids(classes: np.ndarray, id_map: dict[int, int]) -> np.ndarray:
    """(H, W) class ids -> (H, W) uint16 train ids 0..846; classes not in the 847 get 65535."""
    lut = np.full(max(int(classes.max()), max(id_map)) + 1, IGNORE, dtype=np.uint16)
    for class_id, train_id in id_map.items():
        lut[class_id] = train_id
    return lut[classes]


def resize_pair(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink so the shorter side is at most 512 (bilinear image, nearest label)."""
    h, w = label.shape
    short = min(h, w)
    if short <= MAX_SHORT_SIDE:
        return image, label
    scale = MAX_SHORT_SIDE / short
    size = (round(w * scale), round(h * scale))
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(label, size, interpolation=cv2.INTER_NEAREST),
    )


def convert_one(image_file: str, out_image: str, out_label: str, id_map: dict[int, int]) -> None:
    seg_file = image_file[: -len(".jpg")] + "_seg.png"
    image = np.asarray(Image.open(image_file).convert("RGB"))
    label = to_train_ids(class_mask(np.asarray(Image.open(seg_file).convert("RGB"))), id_map)
    if label.shape != image.shape[:2]:
        raise ValueError(f"{seg_file} is {label.shape}, {image_file} is {image.shape[:2]}")
    image, label = resize_pair(image, label)
    Image.fromarray(image).save(out_image, quality=95)
    Image.fromarray(label).save(out_label)


def main(root: str, workers: int) -> None:
    base = os.path.join(root, "ADE20K_2021_17_01")
    require_dir(base, "download ADE20K_2021_17_01.zip from the ADE20K website")
    with open(os.path.join(base, "index_ade20k.pkl"), "rb") as f:
        index = pickle.load(f)
    id_map = ade20k_full_sem_seg_meta()["stuff_dataset_id_to_contiguous_id"]
    jobs = []
    for folder, name in zip(index["folder"], index["filename"]):
        split = "validation" if "_val_" in name else "training"
        out_image = os.path.join(base, "images_detectron2", split, name)
        out_label = os.path.join(
            base, "annotations_detectron2", split, name[: -len(".jpg")] + ".tif"
        )
        jobs.append((os.path.join(root, folder, name), out_image, out_label, id_map))
    for sub in ("images_detectron2", "annotations_detectron2"):
        for split in ("training", "validation"):
            os.makedirs(os.path.join(base, sub, split), exist_ok=True)
    run_parallel(convert_one, jobs, workers, "ADE20K-full")


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
