"""Category metadata of the builtin datasets, from the JSON tables shipped in ``metadata/``.

Each ``*_meta()`` returns the fields that go into :class:`~mask2former.data.Metadata`, in the
published Mask2Former conventions: for panoptic and semantic datasets ``stuff_classes`` lists
*every* class (things included) so that the semantic evaluator sees all of them, and
``stuff_dataset_id_to_contiguous_id`` maps every dataset id.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

_TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metadata")

__all__ = [
    "ade20k_full_sem_seg_meta",
    "ade20k_instance_meta",
    "ade20k_panoptic_meta",
    "ade20k_sem_seg_meta",
    "cityscapes_meta",
    "cityscapes_panoptic_meta",
    "coco_instance_meta",
    "coco_panoptic_meta",
    "coco_stuff_meta",
    "load_table",
    "mapillary_vistas_meta",
    "mapillary_vistas_sem_seg_meta",
    "ytvis_2019_meta",
    "ytvis_2021_meta",
]


@functools.lru_cache(maxsize=None)
def load_table(name: str) -> list:
    """The category table ``metadata/<name>.json`` (a list), read once."""
    path = os.path.join(_TABLE_DIR, name + ".json")
    with open(path) as f:
        return json.load(f)


def _panoptic_fields(categories: list[dict]) -> dict[str, Any]:
    """Class lists and id maps for categories carrying id, name, color, isthing.

    The contiguous id of a category is its position in the table, for things and stuff alike.
    As in the published Mask2Former, ``thing_classes`` / ``thing_colors`` list every category
    (like ``stuff_classes``), so any contiguous id, thing or stuff, indexes either list.
    """
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [c["color"] for c in categories],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [c["color"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def coco_panoptic_meta() -> dict[str, Any]:
    """COCO panoptic: 133 classes (80 things, 53 stuff)."""
    return _panoptic_fields(load_table("coco_panoptic_133"))


def coco_instance_meta() -> dict[str, Any]:
    """COCO instance: the 80 thing classes, contiguous ids 0..79 in id order."""
    things = [c for c in load_table("coco_panoptic_133") if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }


def coco_stuff_meta() -> dict[str, Any]:
    """COCO-Stuff: 171 classes; label PNGs hold the contiguous ids."""
    cats = load_table("coco_stuff_171")
    return {
        "stuff_classes": [c["name"] for c in cats],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def ade20k_sem_seg_meta() -> dict[str, Any]:
    """ADE20K SceneParsing: 150 classes."""
    return {"stuff_classes": list(load_table("ade20k_sem_seg_150"))}


def ade20k_panoptic_meta() -> dict[str, Any]:
    """ADE20K panoptic: 150 classes (100 things), dataset ids 0..149."""
    return _panoptic_fields(load_table("ade20k_panoptic_150"))


def ade20k_instance_meta() -> dict[str, Any]:
    """ADE20K instance: 100 thing classes; dataset ids are the 0-based 150-class ids."""
    cats = load_table("ade20k_instance_100")
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def ade20k_full_sem_seg_meta() -> dict[str, Any]:
    """ADE20K-full: 847 classes; labels hold train ids (0..846), 65535 is unlabeled."""
    cats = sorted(load_table("ade20k_full_847"), key=lambda c: c["trainId"])
    return {
        "stuff_classes": [c["name"] for c in cats],
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in cats},
    }


def _cityscapes_train_labels() -> list[dict]:
    labels = [c for c in load_table("cityscapes_labels") if c["trainId"] not in (255, -1)]
    return sorted(labels, key=lambda c: c["trainId"])


def cityscapes_meta() -> dict[str, Any]:
    """Cityscapes semantic / instance: 19 train ids; 8 instance classes evaluated."""
    things = [
        c for c in load_table("cityscapes_labels") if c["hasInstances"] and not c["ignoreInEval"]
    ]
    train = _cityscapes_train_labels()
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "stuff_classes": [c["name"] for c in train],
        "stuff_colors": [c["color"] for c in train],
    }


def cityscapes_panoptic_meta() -> dict[str, Any]:
    """Cityscapes panoptic: 19 train ids as contiguous ids; dataset ids are the label ids."""
    train = _cityscapes_train_labels()
    return {
        "thing_classes": [c["name"] for c in train],
        "thing_colors": [c["color"] for c in train],
        "stuff_classes": [c["name"] for c in train],
        "stuff_colors": [c["color"] for c in train],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: c["trainId"] for c in train if c["hasInstances"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: c["trainId"] for c in train if not c["hasInstances"]
        },
    }


def mapillary_vistas_sem_seg_meta() -> dict[str, Any]:
    """Mapillary Vistas v1.2 semantic: 65 classes; label value 65 is unlabeled."""
    fields = mapillary_vistas_meta()
    return {"stuff_classes": fields["stuff_classes"], "stuff_colors": fields["stuff_colors"]}


def mapillary_vistas_meta() -> dict[str, Any]:
    """Mapillary Vistas v1.2 panoptic: 65 classes (37 things), dataset ids 1..65."""
    cats = [
        {"id": i + 1, "name": c["readable"], "color": c["color"], "isthing": int(c["instances"])}
        for i, c in enumerate(load_table("mapillary_vistas_65"))
        if c["name"] != "void--unlabeled"
    ]
    return _panoptic_fields(cats)


def _ytvis_fields(table: str) -> dict[str, Any]:
    """YouTube-VIS: 40 thing classes, dataset ids 1..40, contiguous id = position in the table."""
    cats = load_table(table)
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def ytvis_2019_meta() -> dict[str, Any]:
    """YouTube-VIS 2019: 40 classes (person, giant_panda, ..., tennis_racket)."""
    return _ytvis_fields("ytvis_2019_40")


def ytvis_2021_meta() -> dict[str, Any]:
    """YouTube-VIS 2021: 40 classes in alphabetical order (airplane, bear, ..., zebra). Not the
    2019 table: it has bird, car, flying_disc, squirrel and whale instead of ape, eagle, hand,
    owl and sedan, and no class keeps its 2019 id."""
    return _ytvis_fields("ytvis_2021_40")
