"""Registration of the builtin datasets under ``$DETECTRON2_DATASETS`` (default "datasets").

Names, splits and directory layouts are the published ones (see datasets/README.md). Only
names and metadata are registered here; no file is read until ``DatasetCatalog.get``. A
missing file of a builtin dataset raises FileNotFoundError naming it, followed by where the
dataset is looked for and the section of datasets/README.md that says how to prepare it.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

from ..catalog import DatasetCatalog, MetadataCatalog
from . import builtin_meta as M
from .cityscapes import (
    load_cityscapes_instances,
    load_cityscapes_panoptic,
    load_cityscapes_semantic,
)
from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_with_sem_seg
from .sem_seg import register_sem_seg
from .shapes import register_shapes
from .ytvis import register_ytvis_instances
from .ytvis_shapes import register_ytvis_shapes

__all__ = ["datasets_root", "readme_section", "register_all"]

# COCO-format instance annotations: (image dir, json file, metadata)
_COCO_INSTANCE = {
    "coco_2017_train": (
        "coco/train2017",
        "coco/annotations/instances_train2017.json",
        M.coco_instance_meta,
    ),
    "coco_2017_val": (
        "coco/val2017",
        "coco/annotations/instances_val2017.json",
        M.coco_instance_meta,
    ),
}
_ADE20K_INSTANCE = {
    "ade20k_instance_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_instance_train.json",
        M.ade20k_instance_meta,
    ),
    "ade20k_instance_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_instance_val.json",
        M.ade20k_instance_meta,
    ),
}
# (image dir, label dir, image ext, label ext)
_SEM_SEG = {
    "ade20k_sem_seg": (
        "ADEChallengeData2016/images/{}",
        "ADEChallengeData2016/annotations_detectron2/{}",
        "jpg",
        "png",
    ),
    "ade20k_full_sem_seg": (
        "ADE20K_2021_17_01/images_detectron2/{}",
        "ADE20K_2021_17_01/annotations_detectron2/{}",
        "jpg",
        "tif",
    ),
    "mapillary_vistas_sem_seg": (
        "mapillary_vistas/{}/images",
        "mapillary_vistas/{}/labels",
        "jpg",
        "png",
    ),
}
_SEM_SEG_SPLITS = {"train": "training", "val": "validation"}
_COCO_STUFF_10K = {
    "coco_2017_train_stuff_10k_sem_seg": "train",
    "coco_2017_test_stuff_10k_sem_seg": "test",
}
# YouTube-VIS: (frame directory, json file, metadata), the published layout
_YTVIS = {
    **{
        f"ytvis_2019_{split}": (
            f"ytvis_2019/{dirname}/JPEGImages",
            f"ytvis_2019/{dirname}.json",
            M.ytvis_2019_meta,
        )
        for split, dirname in (("train", "train"), ("val", "valid"), ("test", "test"))
    },
    **{
        f"ytvis_2021_{split}": (
            f"ytvis_2021/{dirname}/JPEGImages",
            f"ytvis_2021/{dirname}.json",
            M.ytvis_2021_meta,
        )
        for split, dirname in (("train", "train"), ("val", "valid"), ("test", "test"))
    },
}
# (dataset name prefix, the "## " section of datasets/README.md on getting and preparing it);
# the first prefix that matches wins. shapes and ytvis_shapes are generated, not downloaded.
_README_SECTIONS = (
    *((name, "COCO-Stuff-10K") for name in _COCO_STUFF_10K),
    ("coco_", "COCO (instance, panoptic)"),
    ("ade20k_full_", "ADE20K-full (847 classes)"),
    ("ade20k_", "ADE20K (SceneParsing 150: semantic, panoptic, instance)"),
    ("cityscapes_", "Cityscapes"),
    ("mapillary_vistas_", "Mapillary Vistas (v1.2)"),
    ("ytvis_2019_", "YouTube-VIS (2019, 2021)"),
    ("ytvis_2021_", "YouTube-VIS (2019, 2021)"),
)


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, or "datasets" (relative to the working directory)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _register_instances(root: str, datasets: dict[str, tuple]) -> None:
    for name, (image_dir, json_file, meta) in datasets.items():
        register_coco_instances(
            name, meta(), os.path.join(root, json_file), os.path.join(root, image_dir)
        )


def _register_coco(root: str) -> None:
    _register_instances(root, _COCO_INSTANCE)
    for split in ("train", "val"):
        image_root = os.path.join(root, f"coco/{split}2017")
        args = (
            M.coco_panoptic_meta(),
            image_root,
            os.path.join(root, f"coco/panoptic_{split}2017"),
            os.path.join(root, f"coco/annotations/panoptic_{split}2017.json"),
        )
        instances_json = os.path.join(root, f"coco/annotations/instances_{split}2017.json")
        register_coco_panoptic(f"coco_2017_{split}_panoptic", *args, instances_json)
        register_coco_panoptic_with_sem_seg(
            f"coco_2017_{split}_panoptic_with_sem_seg",
            *args,
            os.path.join(root, f"coco/panoptic_semseg_{split}2017"),
            instances_json,
        )
    for name, split in _COCO_STUFF_10K.items():
        base = os.path.join(root, "coco/coco_stuff_10k")
        register_sem_seg(
            name,
            os.path.join(base, "images_detectron2", split),
            os.path.join(base, "annotations_detectron2", split),
            **M.coco_stuff_meta(),
        )


def _register_sem_seg(root: str) -> None:
    metas = {
        "ade20k_sem_seg": (M.ade20k_sem_seg_meta(), 255),
        "ade20k_full_sem_seg": (M.ade20k_full_sem_seg_meta(), 65535),
        "mapillary_vistas_sem_seg": (M.mapillary_vistas_sem_seg_meta(), 65),
    }
    for prefix, (image_dir, gt_dir, image_ext, gt_ext) in _SEM_SEG.items():
        meta, ignore_label = metas[prefix]
        for split, dirname in _SEM_SEG_SPLITS.items():
            register_sem_seg(
                f"{prefix}_{split}",
                os.path.join(root, image_dir.format(dirname)),
                os.path.join(root, gt_dir.format(dirname)),
                image_ext=image_ext,
                gt_ext=gt_ext,
                ignore_label=ignore_label,
                **meta,
            )


def _register_ade20k(root: str) -> None:
    _register_instances(root, _ADE20K_INSTANCE)
    base = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in _SEM_SEG_SPLITS.items():
        register_coco_panoptic_with_sem_seg(
            f"ade20k_panoptic_{split}",
            dict(M.ade20k_panoptic_meta(), evaluator_type="ade20k_panoptic_seg"),
            os.path.join(base, "images", dirname),
            os.path.join(base, f"ade20k_panoptic_{split}"),
            os.path.join(base, f"ade20k_panoptic_{split}.json"),
            os.path.join(base, "annotations_detectron2", dirname),
            os.path.join(base, f"ade20k_instance_{split}.json"),
        )


def _register_mapillary_panoptic(root: str) -> None:
    for split, dirname in _SEM_SEG_SPLITS.items():
        base = os.path.join(root, "mapillary_vistas", dirname)
        register_coco_panoptic_with_sem_seg(
            f"mapillary_vistas_panoptic_{split}",
            dict(
                M.mapillary_vistas_meta(),
                evaluator_type="mapillary_vistas_panoptic_seg",
                ignore_label=65,
            ),
            os.path.join(base, "images"),
            os.path.join(base, "panoptic"),
            os.path.join(base, "panoptic", "panoptic_2018.json"),
            os.path.join(base, "labels"),
        )


def _register_cityscapes(root: str) -> None:
    for split in ("train", "val", "test"):
        image_dir = os.path.join(root, "cityscapes/leftImg8bit", split)
        gt_dir = os.path.join(root, "cityscapes/gtFine", split)
        common = dict(M.cityscapes_meta(), image_dir=image_dir, image_root=image_dir, gt_dir=gt_dir)
        name = f"cityscapes_fine_instance_seg_{split}"
        DatasetCatalog.register(name, lambda i=image_dir, g=gt_dir: load_cityscapes_instances(i, g))
        MetadataCatalog.get(name).set(evaluator_type="cityscapes_instance", **common)
        name = f"cityscapes_fine_sem_seg_{split}"
        DatasetCatalog.register(name, lambda i=image_dir, g=gt_dir: load_cityscapes_semantic(i, g))
        MetadataCatalog.get(name).set(
            evaluator_type="cityscapes_sem_seg", ignore_label=255, **common
        )
    for split in ("train", "val"):
        image_dir = os.path.join(root, "cityscapes/leftImg8bit", split)
        pan_dir = os.path.join(root, f"cityscapes/gtFine/cityscapes_panoptic_{split}")
        pan_json = os.path.join(root, f"cityscapes/gtFine/cityscapes_panoptic_{split}.json")
        meta = M.cityscapes_panoptic_meta()
        name = f"cityscapes_fine_panoptic_{split}"
        DatasetCatalog.register(
            name,
            lambda i=image_dir, p=pan_dir, j=pan_json, m=meta: load_cityscapes_panoptic(i, p, j, m),
        )
        MetadataCatalog.get(name).set(
            evaluator_type="cityscapes_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            image_root=image_dir,
            panoptic_root=pan_dir,
            panoptic_json=pan_json,
            gt_dir=os.path.join(root, "cityscapes/gtFine", split),
            **meta,
        )


def _register_ytvis(root: str) -> None:
    for name, (image_dir, json_file, meta) in _YTVIS.items():
        register_ytvis_instances(
            name, meta(), os.path.join(root, json_file), os.path.join(root, image_dir)
        )


def readme_section(name: str) -> Optional[str]:
    """The section of datasets/README.md on preparing the builtin dataset ``name``; None for a
    dataset that has none (shapes and ytvis_shapes, which are generated, or a user's own)."""
    return next((section for prefix, section in _README_SECTIONS if name.startswith(prefix)), None)


def _explain_missing_files(load: Callable[[], list[dict]], name: str, root: str) -> Callable:
    """``load``, whose FileNotFoundError also says where to get and how to prepare ``name``."""
    hint = (
        f"builtin dataset {name!r} is looked for under {os.path.abspath(root)!r} (the directory "
        f"in $DETECTRON2_DATASETS, ./datasets when unset); datasets/README.md, section "
        f'"{readme_section(name)}", says where to download it and how to prepare it'
    )

    @functools.wraps(load)
    def load_or_explain() -> list[dict]:
        try:
            return load()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}\n{hint}") from e

    return load_or_explain


def register_all(root: str) -> None:
    """Register every builtin dataset with its files under ``root``."""
    before = set(DatasetCatalog)
    _register_coco(root)
    _register_sem_seg(root)
    _register_ade20k(root)
    _register_mapillary_panoptic(root)
    _register_cityscapes(root)
    _register_ytvis(root)
    register_shapes(root)
    register_ytvis_shapes(root)
    for name in set(DatasetCatalog) - before:
        if readme_section(name) is not None:  # replaces the loader registered just above
            DatasetCatalog[name] = _explain_missing_files(DatasetCatalog[name], name, root)
