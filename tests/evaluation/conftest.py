"""Fixtures of the evaluation tests: small datasets registered under unique names."""

import json
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # eval_helpers, panoptic_reference

from eval_helpers import random_instances, register_panoptic, unique_name  # noqa: E402

from mask2former.data.catalog import MetadataCatalog  # noqa: E402


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


@pytest.fixture()
def panoptic_dataset(tmp_path):
    name, files = register_panoptic(str(tmp_path))
    yield name, files
    MetadataCatalog.remove(name)
