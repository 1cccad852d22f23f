"""Small datasets registered under unique names for the evaluation tests."""
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

from mask2former.data.catalog import MetadataCatalog

sys.path.insert(0, str(Path(__file__).parent))  # panoptic_reference

_counter = itertools.count()


def unique_name(prefix: str) -> str:
    return f"_test_eval_{prefix}_{next(_counter)}"


def random_instances(rng, height, width, n):
    """(n, H, W) bool masks (ellipses of varied size) and their classes in {0, 1}."""
    yy, xx = np.mgrid[0:height, 0:width]
    masks = np.zeros((n, height, width), dtype=bool)
    for k in range(n):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(3, height / 2), rng.uniform(3, width / 2)
        masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    masks[masks.reshape(n, -1).sum(1) == 0, height // 2, width // 2] = True
    return masks, rng.integers(0, 2, size=n)


@pytest.fixture()
def coco_instance_dataset(tmp_path):
    """A 4-image COCO instance json (category ids 5 and 9) and its registered metadata.

    Returns (name, gt) with gt[image_id] = (masks, contiguous classes).
    """
    rng = np.random.default_rng(0)
    images, annotations, gt = [], [], {}
    for image_id in range(1, 5):
        h, w = 128, 160
        masks, classes = random_instances(rng, h, w, 6)
        gt[image_id] = (masks, classes)
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for rle, cls in zip(rles, classes):
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": [5, 9][cls],
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 5, "name": "cat_a"}, {"id": 9, "name": "cat_b"}]
    json_file = tmp_path / "instances.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    name = unique_name("coco")
    MetadataCatalog.get(name).set(
        json_file=str(json_file),
        thing_classes=["cat_a", "cat_b"],
        thing_dataset_id_to_contiguous_id={5: 0, 9: 1},
        evaluator_type="coco",
    )
    yield name, gt
    MetadataCatalog.remove(name)


def register_panoptic(root: str, num_images: int = 4, seed: int = 0):
    """Generated COCO-panoptic gt + predictions under ``root`` and registered metadata.

    Returns (name, files) with files = (gt_json, pred_json, gt_folder, pred_folder) as from
    ``panoptic_reference.make_panoptic_set``. Contiguous ids: things first, then stuff.
    """
    from panoptic_reference import CATEGORIES, make_panoptic_set

    files = make_panoptic_set(root, num_images, seed=seed, height=60, width=80, num_segments=10)
    things = [c for c in CATEGORIES if c["isthing"]]
    stuff = [c for c in CATEGORIES if not c["isthing"]]
    name = unique_name("panoptic")
    MetadataCatalog.get(name).set(
        panoptic_json=files[0],
        panoptic_root=files[2],
        thing_classes=[c["name"] for c in things],
        stuff_classes=[c["name"] for c in CATEGORIES],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(things)},
        stuff_dataset_id_to_contiguous_id={c["id"]: len(things) + i for i, c in enumerate(stuff)},
        label_divisor=1000,
        ignore_label=255,
        evaluator_type="coco_panoptic_seg",
    )
    return name, files


@pytest.fixture()
def panoptic_dataset(tmp_path):
    name, files = register_panoptic(str(tmp_path))
    yield name, files
    MetadataCatalog.remove(name)
