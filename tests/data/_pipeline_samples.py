"""Generated samples whose masks are known from the image's colours, and alignment checks.

Every region of a generated image has one flat colour, and its mask / label is exactly where
that colour is. After augmentation the mask is recomputed from the image: on pixels at least
``BORDER`` pixels away from any label boundary (where bilinear image resizing and nearest
label resizing may legitimately differ), each colour (to within ``COLOUR_TOL`` levels) must
carry exactly one label.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

BORDER = 2  # tolerance, in output pixels, around label boundaries
# OpenCV's 8-bit HSV conversion (SSD jitter) may differ by one level between equal pixels.
COLOUR_TOL = 2
IGNORE = 255
H, W = 48, 64
BACKGROUND_RGB = (90, 90, 90)
IGNORE_RGB = (60, 60, 60)
# Flat colours far apart, none near 0/255 so SSD jitter keeps them apart; none is (128,) * 3.
PALETTE_RGB = [(200, 40, 40), (40, 190, 40), (40, 40, 200), (190, 190, 40), (40, 180, 180)]


def save_rgb(path: Path, rgb: np.ndarray) -> str:
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path)
    return str(path)


def _square(x0, y0, x1, y1):
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def semantic_sample(root: Path, name: str = "sem") -> dict:
    """Background (class 0), a square (1), a disc (2), a triangle (3), an ignore band."""
    labels = np.zeros((H, W), np.uint8)
    labels[6:22, 8:30] = 1
    cv2.circle(labels, (46, 30), 11, 2, thickness=-1)
    cv2.fillPoly(labels, [np.array([[10, 44], [28, 26], [30, 44]], np.int32)], 3)
    labels[:, 58:] = IGNORE
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:] = BACKGROUND_RGB
    for value in (1, 2, 3):
        rgb[labels == value] = PALETTE_RGB[value - 1]
    rgb[labels == IGNORE] = IGNORE_RGB
    Image.fromarray(labels).save(root / f"{name}_label.png")
    return {
        "file_name": save_rgb(root / f"{name}.png", rgb),
        "sem_seg_file_name": str(root / f"{name}_label.png"),
        "height": H,
        "width": W,
        "image_id": name,
    }


def _rasterise(polygon: list[float]) -> np.ndarray:
    rle = mask_util.frPyObjects([polygon], H, W)
    return mask_util.decode(mask_util.merge(rle)).astype(bool)


def instance_sample(root: Path, name: str = "inst") -> tuple[dict, list[tuple]]:
    """Polygons (a square, a triangle), an RLE disc, a crowd square; returns the dict and
    (category_id, rgb) of the non-crowd instances in annotation order."""
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (46, 30), 10, 1, thickness=-1)
    rle = mask_util.encode(np.asfortranarray(disc))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        {"segmentation": [_square(6, 6, 26, 20)], "category_id": 3, "iscrowd": 0},
        {"segmentation": [[8.0, 44.0, 28.0, 26.0, 30.0, 44.0]], "category_id": 0, "iscrowd": 0},
        {"segmentation": rle, "category_id": 5, "iscrowd": 0},
        {"segmentation": [_square(30, 2, 40, 10)], "category_id": 7, "iscrowd": 1},
    ]
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:] = BACKGROUND_RGB
    expected = []
    for i, ann in enumerate(annotations):
        seg = ann["segmentation"]
        mask = _rasterise(seg[0]) if isinstance(seg, list) else disc.astype(bool)
        rgb[mask] = PALETTE_RGB[i]
        if not ann["iscrowd"]:
            expected.append((ann["category_id"], PALETTE_RGB[i]))
    for ann in annotations:
        ann["bbox"], ann["bbox_mode"] = [0, 0, W, H], 1
    record = {
        "file_name": save_rgb(root / f"{name}.png", rgb),
        "height": H,
        "width": W,
        "image_id": name,
        "annotations": annotations,
    }
    return record, expected


def panoptic_sample(root: Path, name: str = "pan", with_labels: bool = False) -> tuple[dict, dict]:
    """Segments: stuff background (cat 0), two things of cat 4 (ids 1000, 1001), a thing of
    cat 2, a crowd segment of cat 4; a void band (id 0). With ``with_labels`` also a label
    map ("sem_seg_file_name": each segment's category, IGNORE on the void band). Returns the
    dict and {segment id: (category_id, rgb)} of the non-crowd segments."""
    ids = np.full((H, W), 77, np.int64)
    ids[4:18, 6:24] = 1000
    ids[24:40, 6:24] = 1001
    yy, xx = np.mgrid[:H, :W]
    ids[(yy - 28) ** 2 + (xx - 44) ** 2 <= 81] = 300
    ids[2:8, 40:52] = 5000
    ids[:, 58:] = 0
    segments = [
        {"id": 77, "category_id": 0, "iscrowd": 0, "isthing": False},
        {"id": 1000, "category_id": 4, "iscrowd": 0, "isthing": True},
        {"id": 1001, "category_id": 4, "iscrowd": 0, "isthing": True},
        {"id": 300, "category_id": 2, "iscrowd": 0, "isthing": True},
        {"id": 5000, "category_id": 4, "iscrowd": 1, "isthing": True},
    ]
    colours = {
        77: BACKGROUND_RGB,
        1000: PALETTE_RGB[0],
        1001: PALETTE_RGB[1],
        300: PALETTE_RGB[2],
        5000: PALETTE_RGB[3],
        0: IGNORE_RGB,
    }
    rgb = np.zeros((H, W, 3), np.uint8)
    for seg_id, colour in colours.items():
        rgb[ids == seg_id] = colour
    pan_rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    record = {
        "file_name": save_rgb(root / f"{name}.png", rgb),
        "pan_seg_file_name": save_rgb(root / f"{name}_pan.png", pan_rgb),
        "segments_info": segments,
        "height": H,
        "width": W,
        "image_id": name,
    }
    if with_labels:
        labels = np.full((H, W), IGNORE, np.uint8)
        for segment in segments:
            labels[ids == segment["id"]] = segment["category_id"]
        Image.fromarray(labels).save(root / f"{name}_label.png")
        record["sem_seg_file_name"] = str(root / f"{name}_label.png")
    expected = {s["id"]: (s["category_id"], colours[s["id"]]) for s in segments if not s["iscrowd"]}
    return record, expected


def label_map_from_masks(masks: torch.Tensor, background: int = 0) -> np.ndarray:
    """(n, H, W) disjoint bool masks -> (H, W) labels 1..n, ``background`` elsewhere."""
    labels = np.full(masks.shape[1:], background, np.int64)
    for i, mask in enumerate(masks.numpy()):
        labels[mask] = i + 1
    return labels


def interior(labels: np.ndarray, border: int = BORDER) -> np.ndarray:
    """(H, W) bool: pixels whose (2 border + 1)² neighbourhood has a single label and lies
    inside the image (a boundary may sit just outside a crop)."""
    size = 2 * border + 1
    kernel = np.ones((size, size), np.uint8)
    keep = np.zeros(labels.shape, bool)
    for value in np.unique(labels):
        region = (labels == value).astype(np.uint8)
        keep |= cv2.erode(region, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return keep


def _clusters(colours: np.ndarray, counts: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Group colours (n, 3) within COLOUR_TOL of a group's most frequent colour."""
    groups: list[tuple[np.ndarray, int]] = []
    for i in np.argsort(-counts):
        for k, (centre, total) in enumerate(groups):
            if np.abs(colours[i] - centre).max() <= COLOUR_TOL:
                groups[k] = (centre, total + counts[i])
                break
        else:
            groups.append((colours[i], counts[i]))
    return groups


def assert_masks_follow_image(
    image: torch.Tensor, labels: np.ndarray, several_colours: tuple = ()
) -> dict[int, tuple]:
    """Recompute the labels from the image's colours on interior pixels and compare.

    Each label's interior colours form groups (colours within COLOUR_TOL); groups of
    different labels must be further apart than COLOUR_TOL (the colour determines the label),
    and every label but ``several_colours`` (ignore / background, which also cover padding)
    has one group. Returns label -> its most frequent colour.

    ``image``: (3, H, W) uint8; ``labels``: (H, W).
    """
    assert tuple(image.shape[-2:]) == labels.shape, (image.shape, labels.shape)
    inside = interior(labels)
    assert inside.sum() > 0.3 * labels.size, "too few interior pixels to check"
    pixels = image.permute(1, 2, 0).numpy().astype(np.int64)
    groups = {}
    for label in np.unique(labels[inside]):
        colours, counts = np.unique(pixels[inside & (labels == label)], axis=0, return_counts=True)
        groups[int(label)] = _clusters(colours, counts)
        if label not in several_colours:
            assert len(groups[int(label)]) == 1, f"label {label} has colours {groups[int(label)]}"
    for (a, groups_a), (b, groups_b) in itertools.combinations(groups.items(), 2):
        for ca, _ in groups_a:
            for cb, _ in groups_b:
                assert np.abs(ca - cb).max() > COLOUR_TOL, f"labels {a}, {b} share colour {ca}"
    return {label: tuple(int(v) for v in g[0][0]) for label, g in groups.items()}
