"""Samples and cases on which the data pipeline is compared with the published implementation.

``tests/reference/official_mappers.json`` holds, for every case below, digests of what the
published code (detectron2 + Mask2Former + MaskFormer's DETR mapper) returned on these
samples with these seeds. ``test_official_parity`` recomputes them with ours. This module
imports nothing of the package, so the same samples can be fed to the published code; it
writes only lossless PNGs, so every run reads back the same pixels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

IGNORE = 255
NUM_CLASSES = 6
# (height, width): odd, square, wide, tiny
SAMPLE_SIZES = [(97, 131), (64, 64), (150, 220), (33, 47)]
REPEATS = 2  # each sample mapped with seeds 1000 * repeat + index

COMMON = [
    "DATASETS.TRAIN", ("parity_train",), "INPUT.FORMAT", "RGB",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES,
]  # fmt: skip
SCALES = (48, 64, 80, 96, 120)
CASES = {
    # semantic: choice resize, absolute crop with the area rule, SSD jitter, padding to 64
    "semantic": ("mask_former_semantic", [
        "INPUT.MIN_SIZE_TRAIN", SCALES, "INPUT.MAX_SIZE_TRAIN", 200,
        "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", (64, 64),
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.75, "INPUT.COLOR_AUG_SSD", True,
        "INPUT.SIZE_DIVISIBILITY", 64,
    ]),
    # semantic: range resize (enlarging too), relative_range crop, no padding
    "semantic_range": ("mask_former_semantic", [
        "INPUT.MIN_SIZE_TRAIN", (40, 160), "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range",
        "INPUT.MAX_SIZE_TRAIN", 333, "INPUT.CROP.ENABLED", True,
        "INPUT.CROP.TYPE", "relative_range", "INPUT.CROP.SIZE", (0.6, 0.9),
    ]),
    "panoptic": ("mask_former_panoptic", [
        "INPUT.MIN_SIZE_TRAIN", SCALES, "INPUT.MAX_SIZE_TRAIN", 200,
        "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", (64, 64),
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.8, "INPUT.COLOR_AUG_SSD", True,
        "INPUT.SIZE_DIVISIBILITY", 64,
    ]),
    "panoptic_enlarge": ("mask_former_panoptic", [
        "INPUT.MIN_SIZE_TRAIN", (170,), "INPUT.MAX_SIZE_TRAIN", 1000,
    ]),
    "instance": ("mask_former_instance", [
        "INPUT.MIN_SIZE_TRAIN", SCALES, "INPUT.MAX_SIZE_TRAIN", 200,
        "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute_range",
        "INPUT.CROP.SIZE", (40, 90), "INPUT.COLOR_AUG_SSD", True, "INPUT.SIZE_DIVISIBILITY", 96,
    ]),
    "instance_lsj": ("coco_instance_lsj", [
        "INPUT.IMAGE_SIZE", 96, "INPUT.MIN_SCALE", 0.1, "INPUT.MAX_SCALE", 2.0,
    ]),
    "panoptic_lsj": ("coco_panoptic_lsj", [
        "INPUT.IMAGE_SIZE", 128, "INPUT.MIN_SCALE", 0.3, "INPUT.MAX_SCALE", 1.7,
    ]),
    "detr_panoptic": ("detr_panoptic", [
        "INPUT.MIN_SIZE_TRAIN", (64, 80, 96), "INPUT.MAX_SIZE_TRAIN", 160,
        "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute_range", "INPUT.CROP.SIZE", (38, 60),
    ]),
}  # fmt: skip
TEST_OVERRIDES = [
    "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 120,
    "TEST.AUG.MIN_SIZES", (40, 75, 130), "TEST.AUG.MAX_SIZE", 500, "TEST.AUG.FLIP", True,
]  # fmt: skip
# Documented differences: the published LSJ instance mapper's "padding_mask" is False
# everywhere (it pads its validity map with 255, which reads as valid), ours marks padding;
# the published test mapper also reads and resizes the label map into "sem_seg", which
# nothing at test time uses, and ours does not read it.
NOT_COMPARED = {"instance_lsj": ("padding_mask",), "test": ("sem_seg",), "tta": ("sem_seg",)}


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def _octagon(cy: float, cx: float, r: float) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, 9)[:-1] + 0.3
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).reshape(-1).tolist()


def make_samples(root: Path) -> list[dict]:
    """Write the samples' PNGs under ``root``; their dataset dicts, with every field
    (label map, panoptic PNG and segments, instance annotations: polygons, RLE, crowd)."""
    rng = np.random.default_rng(12345)
    dicts = []
    for index, (h, w) in enumerate(SAMPLE_SIZES):
        coarse = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
        labels = np.zeros((h, w), np.uint8)
        ids = np.zeros((h, w), np.int64)
        for k in range(6):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(3, max(4.0, min(h, w) / 3))
            disc = _disc(h, w, cy, cx, r)
            labels[disc] = rng.integers(0, NUM_CLASSES)
            ids[disc] = 1 + k + 256 * (k % 3) + 65536 * (k % 2)
        labels[:3, :5] = IGNORE
        segments, annotations = [], []
        for segment_id in np.unique(ids)[1:]:
            mask = ids == segment_id
            known = labels[mask][labels[mask] != IGNORE]
            category = int(np.bincount(known).argmax()) if len(known) else 0
            crowd = int(segment_id % 5 == 0)
            segments.append({"id": int(segment_id), "category_id": category, "iscrowd": crowd})
            ys, xs = np.nonzero(mask)
            if len(annotations) % 3 == 1:
                segmentation = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                segmentation["counts"] = segmentation["counts"].decode("ascii")
            else:
                radius = max(2.0, float(np.sqrt(mask.sum() / np.pi)))
                segmentation = [_octagon(ys.mean(), xs.mean(), radius)]
            annotations.append(
                {
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(np.ptp(xs) + 1),
                        float(np.ptp(ys) + 1),
                    ],
                    "bbox_mode": 1,
                    "category_id": category,
                    "iscrowd": crowd,
                    "segmentation": segmentation,
                }
            )
        colours = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        paths = {name: str(root / f"{name}{index}.png") for name in ("img", "sem", "pan")}
        Image.fromarray(image).save(paths["img"])
        Image.fromarray(labels).save(paths["sem"])
        Image.fromarray(colours).save(paths["pan"])
        dicts.append(
            {
                "file_name": paths["img"],
                "height": h,
                "width": w,
                "image_id": index,
                "sem_seg_file_name": paths["sem"],
                "pan_seg_file_name": paths["pan"],
                "segments_info": segments,
                "annotations": annotations,
            }
        )
    return dicts


def sample_for(mapper_name: str, record: dict) -> dict:
    """The fields of ``record`` a dataset for ``mapper_name`` has (the LSJ instance mapper, as
    published, takes polygon annotations only)."""
    record = dict(record)
    if mapper_name == "mask_former_semantic":
        for key in ("annotations", "pan_seg_file_name", "segments_info"):
            record.pop(key)
    elif mapper_name == "coco_instance_lsj":
        record["annotations"] = [
            a for a in record["annotations"] if isinstance(a["segmentation"], list)
        ]
    elif "panoptic" in mapper_name:
        record.pop("annotations")
    return record


def canonical(mapped: dict) -> dict[str, np.ndarray]:
    """The compared fields of a mapper's output, in fixed dtypes."""
    out = {"image": mapped["image"].numpy().astype(np.uint8)}
    if "sem_seg" in mapped:
        out["sem_seg"] = mapped["sem_seg"].numpy().astype(np.int64)
    if "padding_mask" in mapped:
        out["padding_mask"] = mapped["padding_mask"].numpy().astype(bool)
    if "instances" in mapped:
        instances = mapped["instances"]
        masks = getattr(instances.gt_masks, "tensor", instances.gt_masks)
        out["gt_classes"] = instances.gt_classes.numpy().astype(np.int64)
        out["gt_masks"] = masks.numpy().astype(bool)
        if instances.has("gt_boxes"):
            out["gt_boxes"] = instances.gt_boxes.tensor.numpy().astype(np.float32)
        out["image_size"] = np.asarray(instances.image_size, dtype=np.int64)
    return out


def digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()
