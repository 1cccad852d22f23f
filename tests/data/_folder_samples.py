"""Small dataset folders (mask2former.data.datasets.folder) written for the tests.

Classes: sky, road (stuff), car, person (things). Each image is 16x20 with sky on top, road
below, two separate cars, one person and a few ignored pixels (255).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import yaml
from PIL import Image

CLASSES = ["sky", "road", "car", "person"]
THINGS = ["car", "person"]
SIZE = (16, 20)  # height, width


def write_spec(root: Path, **spec) -> None:
    root.mkdir(parents=True, exist_ok=True)
    spec = {"classes": CLASSES, "things": THINGS, **spec}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))


def label_map(index: int) -> np.ndarray:
    """(16, 20) uint8 class ids: sky, road, two cars, a person, ignored pixels."""
    labels = np.zeros(SIZE, np.uint8)
    labels[8:] = 1
    labels[9:12, 1 + index : 5 + index] = 2
    labels[10:14, 10:14] = 2
    labels[2:7, 16:18] = 3
    labels[0, :3] = 255
    return labels


def write_images(split_dir: Path, count: int, ext: str = "jpg") -> list[str]:
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    stems = [f"im{i}" for i in range(count)]
    for stem in stems:
        pixels = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(split_dir / "images" / f"{stem}.{ext}")
    return stems


def semantic_folder(root: Path, splits: dict[str, int] | None = None, **spec) -> Path:
    """Layout (a): images/ + labels/ for each split, and dataset.yaml."""
    write_spec(root, **spec)
    for split, count in (splits or {"train": 3, "val": 2}).items():
        stems = write_images(root / split, count)
        (root / split / "labels").mkdir()
        for i, stem in enumerate(stems):
            Image.fromarray(label_map(i)).save(root / split / "labels" / f"{stem}.png")
    return root


def instance_masks(index: int) -> dict[str, np.ndarray]:
    """<class>_<k> -> (16, 20) bool mask, for layout (d)."""
    labels = label_map(index)
    car = labels == 2
    left = car.copy()
    left[:, 8:] = False
    return {"car_0": left, "car_1": car & ~left, "person_0": labels == 3}


def masks_folder(root: Path, count: int = 2, things="all", classes=None) -> Path:
    """Layout (d): images/ + masks/<stem>/<class>_<k>.png (values 0 / 255)."""
    write_spec(root, classes=classes or ["car", "person"], things=things)
    stems = write_images(root / "train", count, ext="png")
    for i, stem in enumerate(stems):
        (root / "train" / "masks" / stem).mkdir(parents=True)
        for key, mask in instance_masks(i).items():
            path = root / "train" / "masks" / stem / f"{key}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return root


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def coco_instance_folder(root: Path) -> Path:
    """Layout (b), no dataset.yaml: categories with ids 10 (car) and 20 (person)."""
    stems = write_images(root / "train", 2)
    images, annotations = [], []
    for i, stem in enumerate(stems):
        images.append({"id": 100 + i, "file_name": f"{stem}.jpg", "height": 16, "width": 20})
        for key, mask in instance_masks(i).items():
            y, x = np.nonzero(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + i,
                    "category_id": 10 if key.startswith("car") else 20,
                    "bbox": [int(x.min()), int(y.min()), int(np.ptp(x)) + 1, int(np.ptp(y)) + 1],
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": _rle(mask),
                }
            )
    categories = [{"id": 20, "name": "person"}, {"id": 10, "name": "car"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "train" / "instances.json").write_text(json.dumps(data))
    return root


def coco_panoptic_folder(root: Path) -> Path:
    """Layout (c), no dataset.yaml: one image; sky (id 7), road (id 5), car (id 3, thing)."""
    (stem,) = write_images(root / "train", 1)
    ids = np.zeros(SIZE, np.int64)
    ids[:8] = 1
    ids[8:] = 2
    ids[10:14, 10:14] = 3
    (root / "train" / "panoptic").mkdir()
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "train" / "panoptic" / f"{stem}.png")
    segments = [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 2, "category_id": 5, "iscrowd": 0},
        {"id": 3, "category_id": 3, "iscrowd": 0},
    ]
    data = {
        "images": [{"id": 0, "file_name": f"{stem}.jpg", "height": 16, "width": 20}],
        "annotations": [{"image_id": 0, "file_name": f"{stem}.png", "segments_info": segments}],
        "categories": [
            {"id": 7, "name": "sky", "isthing": 0},
            {"id": 3, "name": "car", "isthing": 1, "color": [1, 2, 3]},
            {"id": 5, "name": "road", "isthing": 0},
        ],
    }
    (root / "train" / "panoptic.json").write_text(json.dumps(data))
    return root


def shapes_folder(root: Path, train: int = 4, val: int = 2) -> Path:
    """Layout (a) from the shapes generator (128x128 images, 6 classes) and its dataset.yaml."""
    from mask2former.data.datasets.shapes import SHAPES_CATEGORIES, generate_shapes

    generated = Path(str(root) + "_generated")
    generate_shapes(str(generated), splits={"train": train, "val": val})
    for split in ("train", "val"):
        shutil.copytree(generated / split, root / split / "images")
        shutil.copytree(generated / f"panoptic_semseg_{split}", root / split / "labels")
    shutil.rmtree(generated)
    names = [c["name"] for c in SHAPES_CATEGORIES]
    things = [c["name"] for c in SHAPES_CATEGORIES if c["isthing"]]
    write_spec(root, classes=names, things=things)
    return root
