"""The mappers on real catalog dicts: the shapes dataset in its three on-disk formats.

Without augmentation, the three formats of one image must give the same answer through
their different code paths: the semantic label map equals the one derived from the
panoptic PNG, and each instance mask (polygons / RLE) matches a panoptic thing mask.
"""

import numpy as np
import pytest
import torch

from mask2former.config import get_cfg
from mask2former.data import build_dataset_mapper, build_detection_train_loader
from mask2former.data.datasets import shapes
from mask2former.data.datasets.coco import load_coco_json
from mask2former.data.datasets.coco_panoptic import load_coco_panoptic_json
from mask2former.data.datasets.sem_seg import load_sem_seg

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def shapes_dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    shapes.generate_shapes(str(root), splits={"train": NUM_IMAGES})
    meta = shapes.shapes_meta()
    panoptic = load_coco_panoptic_json(
        str(root / "annotations" / "panoptic_train.json"),
        str(root / "train"),
        str(root / "panoptic_train"),
        meta,
    )
    instance = load_coco_json(
        str(root / "annotations" / "instances_train.json"), str(root / "train")
    )
    semantic = load_sem_seg(str(root / "panoptic_semseg_train"), str(root / "train"), "png", "jpg")
    return tuple({d["file_name"]: d for d in x} for x in (panoptic, instance, semantic)) + (meta,)


def plain_cfg(name):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = name
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (shapes.IMAGE_SIZE,), 1000
    cfg.INPUT.CROP.ENABLED = False
    return cfg


def test_three_formats_agree_through_the_mappers(shapes_dicts):
    panoptic, instance, semantic, meta = shapes_dicts
    assert panoptic.keys() == instance.keys() == semantic.keys() and len(panoptic) == NUM_IMAGES
    pan_mapper = build_dataset_mapper(plain_cfg("mask_former_panoptic"), True)
    ins_mapper = build_dataset_mapper(plain_cfg("mask_former_instance"), True)
    sem_mapper = build_dataset_mapper(plain_cfg("mask_former_semantic"), True)
    # instance contiguous id i (things in dataset-id order) -> panoptic contiguous id
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    thing_to_all = [thing_map[dataset_id] for dataset_id in sorted(thing_map)]
    for seed, file_name in enumerate(panoptic):
        # the same seed: the same random flip (the mappers draw the same numbers)
        label_file = semantic[file_name]["sem_seg_file_name"]
        np.random.seed(seed)
        pan = pan_mapper({**panoptic[file_name], "sem_seg_file_name": label_file})
        np.random.seed(seed)
        sem = sem_mapper(semantic[file_name])
        np.random.seed(seed)
        ins = ins_mapper(instance[file_name])
        assert torch.equal(pan["image"], sem["image"]) and torch.equal(pan["image"], ins["image"])
        assert torch.equal(pan["sem_seg"], sem["sem_seg"])
        things = [
            m
            for m, c in zip(pan["instances"].gt_masks, pan["instances"].gt_classes)
            if int(c) in thing_to_all
        ]
        assert len(things) == len(ins["instances"]) > 0
        for mask, cls in zip(ins["instances"].gt_masks, ins["instances"].gt_classes):
            ious = [(mask & t).sum().item() / (mask | t).sum().item() for t in things]
            best = int(np.argmax(ious))
            assert ious[best] > 0.8, "instance polygon far from its panoptic segment"
            overlap = pan["sem_seg"][mask].flatten()
            assert torch.mode(overlap).values.item() == thing_to_all[int(cls)]


FORMAT_OF = {
    "mask_former_semantic": 2,
    "mask_former_panoptic": 0,
    "mask_former_instance": 1,
    "coco_instance_lsj": 1,
    "coco_panoptic_lsj": 0,
    "detr_panoptic": 0,
}


@pytest.mark.parametrize("name", list(FORMAT_OF))
def test_every_mapper_batches_shapes_with_augmentation(shapes_dicts, name):
    dicts = shapes_dicts[FORMAT_OF[name]]
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.INPUT.DATASET_MAPPER_NAME = name
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96, 128, 160), 400
    if not name.endswith("_lsj"):  # each recipe with the options it has
        cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = (
            True,
            "absolute",
            [96, 96],
        )
    if name in ("mask_former_semantic", "mask_former_panoptic"):
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.8
    cfg.INPUT.COLOR_AUG_SSD = name.startswith("mask_former")
    cfg.INPUT.SIZE_DIVISIBILITY, cfg.INPUT.IMAGE_SIZE = 96, 128
    cfg.INPUT.MASK_FORMAT = "bitmask"  # shapes stores some instances as RLE
    loader = build_detection_train_loader(
        cfg,
        mapper=build_dataset_mapper(cfg, True),
        dataset=list(dicts.values()),
    )
    batch = next(iter(loader))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH
    for d in batch:
        image, instances = d["image"], d["instances"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert instances.gt_masks.shape[1:] == image.shape[1:]
        assert instances.gt_classes.dtype == torch.int64
        if name == "coco_instance_lsj":  # the one recipe that drops cropped-away instances
            assert instances.gt_masks.flatten(1).any(1).all()
        if "sem_seg" in d:
            assert d["sem_seg"].shape == image.shape[1:]
