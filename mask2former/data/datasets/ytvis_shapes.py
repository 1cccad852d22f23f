"""``ytvis_shapes``: a small synthetic video instance segmentation dataset, generated on first
use, in the YouTube-VIS format (nothing to download).

96x128 videos of 1-3 moving discs, squares and triangles (one colour per class: red discs,
blue squares, yellow triangles) over a drifting textured background. Shapes move at constant
speed, bounce off the borders, polygons turn slowly, and they pass in front of each other in
a fixed depth order: each frame's annotation is the visible part. Occlusion is present but
never total (every object keeps at least :data:`MIN_VISIBLE` of its area in every frame).
Written once, deterministically, with the same layout as YouTube-VIS::

    <root>/ytvis_shapes/
        train/JPEGImages/video000/00000.jpg ...    frames
        train.json                                  YouTube-VIS annotations (RLE masks)
        valid/JPEGImages/... , valid.json
        VERSION                                     written last: the generator version
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..catalog import DatasetCatalog, MetadataCatalog
from .common import bbox_xywh
from .generated import ensure_generated, write_version
from .ytvis import load_ytvis_json

__all__ = [
    "YTVIS_SHAPES_CATEGORIES",
    "ensure_ytvis_shapes_dataset",
    "generate_ytvis_shapes",
    "register_ytvis_shapes",
]

GENERATOR_VERSION = "1"
HEIGHT, WIDTH = 96, 128
#: split -> (directory and JSON name as in YouTube-VIS, number of videos, frames per video)
SPLITS = {"train": ("train", 60, 8), "val": ("valid", 10, 12)}
_SPLIT_STREAMS = {"train": 0, "val": 1}  # each split draws from its own seeded stream
MIN_VISIBLE = 0.4  # smallest visible share of an object's area in any frame

YTVIS_SHAPES_CATEGORIES = [
    {"id": 1, "name": "disc", "color": [220, 30, 30]},
    {"id": 2, "name": "square", "color": [30, 80, 235]},
    {"id": 3, "name": "triangle", "color": [245, 205, 20]},
]

_GRID = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)  # (y, x) pixel coordinates


# ----------------------------------------------------------------------------- drawing
def _backgrounds(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """(T, H, W, 3) float frames of a muted texture (waves and coarse speckle) that drifts."""
    y, x = _GRID
    base = rng.uniform(90, 150) + rng.uniform(-20, 20, 3)
    fx, fy = rng.uniform(0.08, 0.3, 2)
    phase = rng.uniform(0, 2 * np.pi, 2)
    drift = rng.uniform(-0.3, 0.3, 2)  # radians per frame
    speckle = cv2.resize(
        rng.normal(0, 14, (HEIGHT // 8, WIDTH // 8)).astype(np.float32),
        (WIDTH, HEIGHT),
        interpolation=cv2.INTER_LINEAR,
    )
    frames = []
    for t in range(num_frames):
        waves = 18 * np.sin(fx * x + phase[0] + drift[0] * t) * np.sin(fy * y + phase[1])
        waves += 10 * np.sin(0.5 * fy * y + drift[1] * t)
        frames.append(base[None, None, :] + (waves + speckle)[..., None])
    return np.stack(frames)


def _shape_mask(category_id: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """(H, W) bool mask of a disc, square or triangle."""
    canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
    cx, cy = center
    if category_id == 1:
        cv2.circle(canvas, (round(cx), round(cy)), round(radius), 1, -1, cv2.LINE_8)
        return canvas.astype(bool)
    n = 4 if category_id == 2 else 3
    angles = angle + 2 * np.pi * np.arange(n) / n
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1, cv2.LINE_8)
    return canvas.astype(bool)


def _trajectory(rng: np.random.Generator, radius: float, num_frames: int) -> np.ndarray:
    """(T, 2) centres (x, y): constant speed, bouncing off the borders."""
    low, high = np.array([radius, radius]), np.array([WIDTH - radius, HEIGHT - radius])
    position = rng.uniform(low, high)
    speed, direction = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.cos(direction), np.sin(direction)])
    centers = []
    for _ in range(num_frames):
        centers.append(position.copy())
        position = position + velocity
        for axis in range(2):  # reflect at the border
            if not low[axis] <= position[axis] <= high[axis]:
                velocity[axis] = -velocity[axis]
                position[axis] = np.clip(position[axis], low[axis], high[axis])
    return np.array(centers)


def _full_masks(rng: np.random.Generator, num_frames: int) -> tuple[list[int], np.ndarray]:
    """Classes of 1-3 objects and their unoccluded (N, T, H, W) masks, back to front."""
    classes, masks = [], []
    for _ in range(int(rng.integers(1, 4))):
        category_id = int(rng.integers(1, 4))
        radius = rng.uniform(11, 18)
        centers = _trajectory(rng, radius, num_frames)
        angle, spin = rng.uniform(0, 2 * np.pi), rng.uniform(-0.12, 0.12)
        classes.append(category_id)
        masks.append(
            [
                _shape_mask(category_id, centers[t], radius, angle + spin * t)
                for t in range(len(centers))
            ]
        )
    return classes, np.array(masks, dtype=bool)


def _visible(full: np.ndarray) -> np.ndarray:
    """(N, T, H, W) visible parts: each object minus the objects drawn after it."""
    visible = full.copy()
    for k in range(len(full) - 1):
        visible[k] &= ~np.any(full[k + 1 :], axis=0)
    return visible


def _objects(rng: np.random.Generator, num_frames: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Classes, (N, T, H, W) full and visible masks of a video whose objects each keep at
    least :data:`MIN_VISIBLE` of their area visible in every frame (layouts that hide more
    are drawn again)."""
    for _attempt in range(1000):
        classes, full = _full_masks(rng, num_frames)
        visible = _visible(full)
        share = visible.sum((2, 3)) / np.maximum(full.sum((2, 3)), 1)
        if share.min() >= MIN_VISIBLE:
            return classes, full, visible
    raise RuntimeError("ytvis_shapes: no layout with visible objects in 1000 draws")


def _render(rng: np.random.Generator, num_frames: int):
    """(T, H, W, 3) uint8 frames, object classes and (N, T, H, W) visible masks."""
    frames = _backgrounds(rng, num_frames)
    classes, _, visible = _objects(rng, num_frames)
    for category_id, masks in zip(classes, visible):
        color = np.array(YTVIS_SHAPES_CATEGORIES[category_id - 1]["color"], np.float32)
        paint = color + rng.normal(0, 10, 3)
        for t in range(num_frames):
            np.copyto(frames[t], paint, where=masks[t][..., None])
    frames += rng.normal(0, 5, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8), classes, visible


# ----------------------------------------------------------------------------- annotations
def _track(masks: np.ndarray) -> dict[str, list]:
    """Per-frame segmentations (RLE), boxes and areas of one object; null where not visible."""
    segmentations, bboxes, areas = [], [], []
    for mask in masks:
        if not mask.any():
            segmentations.append(None)
            bboxes.append(None)
            areas.append(None)
            continue
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        segmentations.append(rle)
        bboxes.append([float(v) for v in bbox_xywh(mask)])
        areas.append(float(mask.sum()))
    return {"segmentations": segmentations, "bboxes": bboxes, "areas": areas}


def _generate_split(out: str, split: str, seed: int, num_videos: int, num_frames: int) -> None:
    dirname = SPLITS[split][0]
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    videos, annotations = [], []
    for video_id in range(1, num_videos + 1):
        name = f"video{video_id:03d}"
        os.makedirs(os.path.join(out, dirname, "JPEGImages", name))
        frames, classes, visible = _render(rng, num_frames)
        file_names = [f"{name}/{t:05d}.jpg" for t in range(num_frames)]
        for frame, file_name in zip(frames, file_names):
            path = os.path.join(out, dirname, "JPEGImages", file_name)
            Image.fromarray(frame).save(path, format="JPEG", quality=95)
        videos.append(
            {
                "id": video_id,
                "file_names": file_names,
                "height": HEIGHT,
                "width": WIDTH,
                "length": num_frames,
            }
        )
        for category_id, masks in zip(classes, visible):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category_id,
                    "iscrowd": 0,
                    **_track(masks),
                }
            )
    categories = [{"id": c["id"], "name": c["name"]} for c in YTVIS_SHAPES_CATEGORIES]
    with open(os.path.join(out, f"{dirname}.json"), "w") as f:
        json.dump({"videos": videos, "annotations": annotations, "categories": categories}, f)


def generate_ytvis_shapes(
    out_dir: str, seed: int = 0, splits: Optional[dict[str, tuple[int, int]]] = None
) -> None:
    """Write the dataset into the new directory ``out_dir``; VERSION is written last.

    ``splits`` maps "train" / "val" to (number of videos, frames per video) (default from
    :data:`SPLITS`); a split with fewer videos of as many frames is a prefix of the larger.
    """
    os.makedirs(out_dir)
    splits = splits or {split: (n, t) for split, (_, n, t) in SPLITS.items()}
    for split, (num_videos, num_frames) in splits.items():
        _generate_split(out_dir, split, seed, num_videos, num_frames)
    write_version(out_dir, GENERATOR_VERSION)


def ensure_ytvis_shapes_dataset(root: str) -> str:
    """Return ``<root>/ytvis_shapes``, generating it first unless a complete current copy is
    there (safe under concurrency, see :func:`~.generated.ensure_generated`)."""
    return ensure_generated(
        root, "ytvis_shapes", GENERATOR_VERSION, lambda out: generate_ytvis_shapes(out)
    )


# ----------------------------------------------------------------------------- registration
def ytvis_shapes_meta() -> dict[str, Any]:
    return {
        "thing_classes": [c["name"] for c in YTVIS_SHAPES_CATEGORIES],
        "thing_colors": [c["color"] for c in YTVIS_SHAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(YTVIS_SHAPES_CATEGORIES)
        },
    }


def register_ytvis_shapes(root: str) -> None:
    """Register ytvis_shapes_train and ytvis_shapes_val (evaluator_type "ytvis").

    Nothing is generated until one of them is loaded with ``DatasetCatalog.get``.
    """
    base = os.path.join(root, "ytvis_shapes")
    for split, (dirname, _, _) in SPLITS.items():
        name = f"ytvis_shapes_{split}"
        json_file = os.path.join(base, f"{dirname}.json")
        image_root = os.path.join(base, dirname, "JPEGImages")

        def load(name=name, json_file=json_file, image_root=image_root) -> list[dict]:
            ensure_ytvis_shapes_dataset(root)
            return load_ytvis_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="ytvis",
            **ytvis_shapes_meta(),
        )
