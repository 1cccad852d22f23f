"""Shared helpers of the evaluation tests: unique dataset names, generated data sets.

(A module of its own rather than conftest.py: test modules import these by name, and
"conftest" is ambiguous once several test folders have one.)
"""

import itertools
import sys
from pathlib import Path

import numpy as np

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
