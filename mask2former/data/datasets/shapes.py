"""``shapes``: a small synthetic panoptic dataset generated on first use (nothing to download).

128x128 images of discs, squares and triangles in several colours over two textured stuff
regions (water, grass, sand). Written once, deterministically, as real files in the COCO
formats so that everything downstream goes through the same loaders as COCO::

    <root>/shapes/
        {train,val}/000000.jpg ...                images
        panoptic_{train,val}/000000.png ...       panoptic PNGs (segment id = R + 256 G + 256^2 B)
        panoptic_semseg_{train,val}/000000.png    semantic labels (contiguous ids 0..5)
        annotations/instances_{train,val}.json    COCO instance (things, RLE masks)
        annotations/panoptic_{train,val}.json     COCO panoptic
        VERSION                                   written last: the generator version

Generation happens in a temporary directory renamed into place (``generated.py``), so several
processes may start at once: the first rename wins and the others use its result.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ...utils.panoptic_png import id2rgb
from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json
from .coco_panoptic import load_coco_panoptic_json
from .common import bbox_xywh
from .generated import ensure_generated, write_version
from .sem_seg import load_sem_seg

__all__ = ["SHAPES_CATEGORIES", "ensure_shapes_dataset", "generate_shapes", "register_shapes"]

GENERATOR_VERSION = "1"
IMAGE_SIZE = 128
SPLITS = {"train": 300, "val": 50}
_SPLIT_STREAMS = {"train": 0, "val": 1}  # each split draws from its own seeded stream

SHAPES_CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 0, 142]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [255, 200, 0]},
    {"id": 4, "name": "water", "isthing": 0, "color": [40, 90, 200]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [40, 150, 50]},
    {"id": 6, "name": "sand", "isthing": 0, "color": [210, 180, 120]},
]
_THING_IDS = [c["id"] for c in SHAPES_CATEGORIES if c["isthing"]]
_STUFF_IDS = [c["id"] for c in SHAPES_CATEGORIES if not c["isthing"]]
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)}
# thing colours are unrelated to the class and far from the stuff textures
_THING_PAINTS = np.array(
    [[230, 30, 30], [245, 245, 245], [25, 25, 25], [200, 40, 200], [250, 140, 0]], np.float32
)


# ----------------------------------------------------------------------------- drawing
_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)  # (y, x) pixel coordinates


def _stuff_texture(category_id: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float texture of a stuff class: waves, vertical stripes or speckle."""
    s = IMAGE_SIZE
    y, x = _GRID
    base = np.array(SHAPES_CATEGORIES[_CONTIGUOUS[category_id]]["color"], np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if category_id == 4:  # water: horizontal waves
        pattern = 25 * np.sin(0.5 * y + 3 * np.sin(0.1 * x + phase))
    elif category_id == 5:  # grass: vertical stripes
        pattern = 30 * np.sin(1.3 * x + phase)
    else:  # sand: coarse speckle
        pattern = cv2.resize(
            rng.normal(0, 25, (s // 4, s // 4)).astype(np.float32),
            (s, s),
            interpolation=cv2.INTER_NEAREST,
        )
    noise = rng.normal(0, 8, (s, s)).astype(np.float32)
    return base[None, None, :] + (pattern + noise)[..., None]


def _stuff_layout(rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """One or two stuff classes covering the image: (category id, (H, W) bool mask) pairs.

    Two regions are split by a random straight line through the central third of the image.
    """
    s = IMAGE_SIZE
    if rng.random() < 0.2:
        return [(int(rng.choice(_STUFF_IDS)), np.ones((s, s), bool))]
    a, b = rng.choice(_STUFF_IDS, size=2, replace=False)
    cx, cy = rng.uniform(s / 3, 2 * s / 3, size=2)
    angle = rng.uniform(0, np.pi)
    y, x = _GRID
    side = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle) > 0
    return [(int(a), ~side), (int(b), side)]


def _shape_mask(category_id: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool mask of one disc, square or triangle at a random place, size and angle."""
    s = IMAGE_SIZE
    r = rng.uniform(12, 22)
    cx, cy = rng.uniform(r, s - r, size=2)
    canvas = np.zeros((s, s), np.uint8)
    if category_id == 1:
        cv2.circle(canvas, (round(cx), round(cy)), round(r), 1, -1, cv2.LINE_8)
        return canvas.astype(bool)
    n = 4 if category_id == 2 else 3
    start = rng.uniform(0, 2 * np.pi)
    angles = start + 2 * np.pi * np.arange(n) / n
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)
    return canvas.astype(bool)


def _place_things(rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """1-4 non-touching things: (category id, mask) pairs."""
    things: list[tuple[int, np.ndarray]] = []
    occupied = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        category_id = int(rng.choice(_THING_IDS))
        for _attempt in range(20):
            mask = _shape_mask(category_id, rng)
            if not occupied[mask].any():
                things.append((category_id, mask))
                occupied = cv2.dilate((occupied | mask).astype(np.uint8), np.ones((5, 5), np.uint8))
                break
    return things


def _render(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """An (H, W, 3) uint8 image and its segments: things first, then stuff (minus things)."""
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    stuff = _stuff_layout(rng)
    for category_id, mask in stuff:
        np.copyto(image, _stuff_texture(category_id, rng), where=mask[..., None])
    things = _place_things(rng)
    shading = rng.normal(0, 6, image.shape).astype(np.float32)
    covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    for _, mask in things:
        paint = _THING_PAINTS[rng.integers(len(_THING_PAINTS))]
        np.copyto(image, paint + shading, where=mask[..., None])
        covered |= mask
    stuff = [(c, m & ~covered) for c, m in stuff if (m & ~covered).any()]
    return np.clip(image, 0, 255).astype(np.uint8), things + stuff


# ----------------------------------------------------------------------------- annotations
def _write_png(path: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _write_image_files(out: str, split: str, stem: str, image, segments) -> None:
    """The JPEG, the panoptic PNG (segment k+1 for segments[k]) and the semantic PNG."""
    Image.fromarray(image).save(os.path.join(out, split, stem + ".jpg"), format="JPEG", quality=95)
    ids = np.zeros(image.shape[:2], np.int64)
    semantic = np.full(image.shape[:2], 255, np.uint8)
    for k, (category_id, mask) in enumerate(segments):
        ids[mask] = k + 1
        semantic[mask] = _CONTIGUOUS[category_id]
    _write_png(os.path.join(out, f"panoptic_{split}", stem + ".png"), id2rgb(ids))
    _write_png(os.path.join(out, f"panoptic_semseg_{split}", stem + ".png"), semantic)


def _annotate(image_id: int, segments, next_ann_id: int) -> tuple[list[dict], list[dict]]:
    """(COCO instance annotations of the things, panoptic segments_info of all segments)."""
    instances, segments_info = [], []
    for k, (category_id, mask) in enumerate(segments):
        area, bbox = int(mask.sum()), bbox_xywh(mask)
        segments_info.append(
            {"id": k + 1, "category_id": category_id, "iscrowd": 0, "bbox": bbox, "area": area}
        )
        if category_id in _THING_IDS:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            instances.append(
                {
                    "id": next_ann_id + len(instances),
                    "image_id": image_id,
                    "iscrowd": 0,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": area,
                    "segmentation": rle,
                }
            )
    return instances, segments_info


def _generate_split(out: str, split: str, count: int, seed: int) -> None:
    for d in (split, f"panoptic_{split}", f"panoptic_semseg_{split}"):
        os.makedirs(os.path.join(out, d))
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    images, instances, pan_annotations = [], [], []
    for image_id in range(count):
        stem = f"{image_id:06d}"
        image, segments = _render(rng)
        _write_image_files(out, split, stem, image, segments)
        images.append(
            {"id": image_id, "file_name": stem + ".jpg", "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        annos, segments_info = _annotate(image_id, segments, len(instances) + 1)
        instances += annos
        pan_annotations.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )
    things = [c for c in SHAPES_CATEGORIES if c["isthing"]]
    _write_json(
        os.path.join(out, "annotations", f"instances_{split}.json"),
        {"images": images, "annotations": instances, "categories": things},
    )
    _write_json(
        os.path.join(out, "annotations", f"panoptic_{split}.json"),
        {"images": images, "annotations": pan_annotations, "categories": SHAPES_CATEGORIES},
    )


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


def generate_shapes(out_dir: str, seed: int = 0, splits: Optional[dict[str, int]] = None) -> None:
    """Write the dataset into the new directory ``out_dir``; VERSION is written last.

    ``splits`` maps "train" / "val" to an image count (default :data:`SPLITS`); a split with
    fewer images is a prefix of the same split with more.
    """
    os.makedirs(os.path.join(out_dir, "annotations"))
    for split, count in (splits or SPLITS).items():
        _generate_split(out_dir, split, count, seed)
    write_version(out_dir, GENERATOR_VERSION)


# ----------------------------------------------------------------------------- on-disk cache
def ensure_shapes_dataset(root: str) -> str:
    """Return ``<root>/shapes``, generating it first unless a complete current copy is there
    (safe under concurrency, see :func:`~.generated.ensure_generated`)."""
    return ensure_generated(root, "shapes", GENERATOR_VERSION, lambda out: generate_shapes(out))


# ----------------------------------------------------------------------------- registration
def shapes_meta() -> dict[str, Any]:
    """Class lists and id maps in the published panoptic convention (every list holds all 6,
    indexed by contiguous id)."""
    things = [c for c in SHAPES_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in SHAPES_CATEGORIES],
        "thing_colors": [c["color"] for c in SHAPES_CATEGORIES],
        "stuff_classes": [c["name"] for c in SHAPES_CATEGORIES],
        "stuff_colors": [c["color"] for c in SHAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: _CONTIGUOUS[c["id"]] for c in things},
        "stuff_dataset_id_to_contiguous_id": dict(_CONTIGUOUS),
    }


def register_shapes(root: str) -> None:
    """Register shapes_{train,val}_{panoptic,panoptic_with_sem_seg,instance,sem_seg}.

    Nothing is generated until one of them is loaded with ``DatasetCatalog.get``.
    """
    base = os.path.join(root, "shapes")
    meta = shapes_meta()
    for split in SPLITS:
        image_root = os.path.join(base, split)
        pan_root = os.path.join(base, f"panoptic_{split}")
        pan_json = os.path.join(base, "annotations", f"panoptic_{split}.json")
        ins_json = os.path.join(base, "annotations", f"instances_{split}.json")
        sem_root = os.path.join(base, f"panoptic_semseg_{split}")
        files = {
            "image_root": image_root,
            "panoptic_root": pan_root,
            "panoptic_json": pan_json,
            "json_file": ins_json,
            "sem_seg_root": sem_root,
        }

        def panoptic(pan_json=pan_json, image_root=image_root, pan_root=pan_root, sem=None):
            ensure_shapes_dataset(root)
            return load_coco_panoptic_json(pan_json, image_root, pan_root, meta, sem)

        def instance(name=f"shapes_{split}_instance", ins_json=ins_json, image_root=image_root):
            ensure_shapes_dataset(root)
            return load_coco_json(ins_json, image_root, name)

        def semantic(sem_root=sem_root, image_root=image_root):
            ensure_shapes_dataset(root)
            return load_sem_seg(sem_root, image_root, "png", "jpg")

        pan_fields = dict(
            meta, evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000, **files
        )
        _register(f"shapes_{split}_panoptic", panoptic, pan_fields)
        _register(
            f"shapes_{split}_panoptic_with_sem_seg",
            lambda f=panoptic, s=sem_root: f(sem=s),
            pan_fields,
        )
        _register(
            f"shapes_{split}_instance",
            instance,
            dict(
                thing_classes=[c["name"] for c in SHAPES_CATEGORIES if c["isthing"]],
                thing_colors=[c["color"] for c in SHAPES_CATEGORIES if c["isthing"]],
                thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(_THING_IDS)},
                evaluator_type="coco",
                json_file=ins_json,
                image_root=image_root,
            ),
        )
        _register(
            f"shapes_{split}_sem_seg",
            semantic,
            dict(
                stuff_classes=meta["stuff_classes"],
                stuff_colors=meta["stuff_colors"],
                ignore_label=255,
                evaluator_type="sem_seg",
                image_root=image_root,
                sem_seg_root=sem_root,
            ),
        )


def _register(name: str, func, fields: dict) -> None:
    DatasetCatalog.register(name, func)
    MetadataCatalog.get(name).set(**fields)
