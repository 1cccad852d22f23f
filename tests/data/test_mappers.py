"""Dataset mappers: masks follow the image through every augmentation, ignore survives,
padding is ignore, panoptic ids decode to the right classes, bad samples name their file,
and the published mappers' rules hold (every non-crowd annotation gives an instance, padding
to INPUT.SIZE_DIVISIBILITY square, keys the published mapper does not read are refused).
Equality with the published implementation's outputs is in ``test_official_parity``.

Alignment is checked on generated images whose masks are where given colours are (see
``_pipeline_samples``), with a tolerance of ``BORDER`` = 2 output pixels at label boundaries.
"""

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mask2former.config import ConfigError, get_cfg
from mask2former.data import BadSampleError, build_dataset_mapper
from mask2former.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    DatasetMapper,
    YTVISDatasetMapper,
)
from tests.data._pipeline_samples import (
    BACKGROUND_RGB,
    IGNORE,
    IGNORE_RGB,
    PALETTE_RGB,
    assert_masks_follow_image,
    instance_sample,
    label_map_from_masks,
    panoptic_sample,
    semantic_sample,
)
from tests.published import published_video_config_hashes

SEEDS = range(8)
PAD_RGB = (128, 128, 128)


def small_cfg(mapper_name: str, colour_aug: bool = True):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (40, 56, 72)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 200
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [32, 40]
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.6
    cfg.INPUT.COLOR_AUG_SSD = colour_aug
    cfg.INPUT.SIZE_DIVISIBILITY = 48  # crops (at most 32x40) are padded to 48x48
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.INPUT.MIN_SCALE = 0.5
    cfg.INPUT.MAX_SCALE = 2.0
    if mapper_name in ("mask_former_instance", "detr_panoptic"):  # crop without the area rule
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    if mapper_name in ("detr_panoptic", "coco_instance_lsj", "coco_panoptic_lsj"):
        cfg.INPUT.COLOR_AUG_SSD = False  # not part of these recipes
    if mapper_name.endswith("_lsj"):
        cfg.INPUT.CROP.ENABLED = False
    return cfg


def seed_all(seed: int) -> None:
    """The generators the augmentations draw from: NumPy's, and Python's (SSD colour jitter)."""
    np.random.seed(seed)
    random.seed(seed)


def colour_mask(image: torch.Tensor, rgb) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() == np.array(rgb, np.uint8)).all(-1)


def assert_padding_is_right_bottom_band(pad: np.ndarray) -> None:
    rows, cols = np.where(~pad)
    assert not pad[: rows.max() + 1, : cols.max() + 1].any(), "padding inside the content"


def test_registry_has_every_mapper_a_shipped_config_names():
    configs = Path(__file__).resolve().parents[2] / "configs"
    named = set()
    for path in configs.rglob("*.yaml"):
        named |= set(re.findall(r'DATASET_MAPPER_NAME:\s*"?(\w+)', path.read_text()))
    assert named, "no DATASET_MAPPER_NAME found under configs/"
    assert named <= {name for name, _ in DATASET_MAPPER_REGISTRY}


def test_unknown_mapper_name_lists_registered_names():
    cfg = small_cfg("not_a_mapper")
    with pytest.raises(KeyError, match="INPUT.DATASET_MAPPER_NAME.*mask_former_semantic"):
        build_dataset_mapper(cfg, is_train=True)


# --------------------------------------------------------------------------- semantic
@pytest.mark.parametrize("seed", SEEDS)
def test_semantic_masks_follow_image(tmp_path, seed):
    record = semantic_sample(tmp_path)
    mapper = build_dataset_mapper(small_cfg("mask_former_semantic"), is_train=True)
    seed_all(seed)
    out = mapper(record)
    image, sem_seg = out["image"], out["sem_seg"]
    assert image.dtype == torch.uint8 and sem_seg.dtype == torch.int64
    assert image.shape[1:] == sem_seg.shape == (48, 48)
    # the 32x40 crop; the padding (ignore, not colour-jittered) is checked separately
    assert_masks_follow_image(image[:, :32, :40], sem_seg[:32, :40].numpy(), (IGNORE,))
    instances = out["instances"]
    expected = sorted(set(sem_seg.unique().tolist()) - {IGNORE})
    assert instances.gt_classes.tolist() == expected
    assert torch.equal(instances.gt_masks, sem_seg[None] == instances.gt_classes[:, None, None])
    assert (out["height"], out["width"], out["file_name"]) == (48, 64, record["file_name"])


def test_semantic_ignore_survives_and_padding_is_ignore(tmp_path):
    record = semantic_sample(tmp_path)
    cfg = small_cfg("mask_former_semantic", colour_aug=False)
    cfg.INPUT.CROP.SIZE = [30, 64]  # 30 rows: always padded to 64; wide enough for the band
    cfg.INPUT.SIZE_DIVISIBILITY = 64
    mapper = build_dataset_mapper(cfg, True)
    ignore_band_seen = 0
    for seed in SEEDS:
        seed_all(seed)
        out = mapper(record)
        image, sem_seg = out["image"], out["sem_seg"].numpy()
        pad = colour_mask(image, PAD_RGB)
        assert pad[30:].all() and not pad[:30, :53].any(), "30x(53..64) crops padded to 64x64"
        assert_padding_is_right_bottom_band(pad)
        assert (sem_seg[pad] == IGNORE).all()
        assert_masks_follow_image(image, sem_seg, several_colours=(IGNORE,))
        band = colour_mask(image, IGNORE_RGB)
        ignore_band_seen += band.any()
        assert (sem_seg[band] == IGNORE).all()
        assert IGNORE not in out["instances"].gt_classes.tolist()
    assert ignore_band_seen  # the crops keep the ignore band in some of the samples


def test_semantic_category_area_constraint_is_used(tmp_path):
    cfg = small_cfg("mask_former_semantic")
    mapper = build_dataset_mapper(cfg, True)
    crop = [a for a in mapper.augmentations if type(a).__name__.startswith("RandomCrop_")]
    assert len(crop) == 1 and crop[0].single_category_max_area == 0.6
    assert crop[0].ignored_category == IGNORE
    assert type(mapper.augmentations[-1]).__name__ == "RandomFlip"  # always, as published


def test_semantic_bad_inputs_name_the_file(tmp_path):
    record = semantic_sample(tmp_path)
    mapper = build_dataset_mapper(small_cfg("mask_former_semantic"), True)
    with pytest.raises(BadSampleError, match=r"sem\.png.*64x48.*annotation says 70x48"):
        mapper({**record, "width": 70})
    other = semantic_sample(tmp_path, "small")
    small_label = np.zeros((40, 64), np.uint8)
    from PIL import Image

    Image.fromarray(small_label).save(other["sem_seg_file_name"])
    with pytest.raises(
        BadSampleError, match=r"small_label\.png: label map is 64x40 .*/sem\.png is 64x48"
    ):
        mapper({**record, "sem_seg_file_name": other["sem_seg_file_name"]})
    cfg = small_cfg("mask_former_semantic")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3  # the sample has labels 0..3 and 255
    with pytest.raises(
        BadSampleError, match=r"sem_label\.png: label values \[3\] are outside 0\.\.2"
    ):
        build_dataset_mapper(cfg, True)(record)
    without = {k: v for k, v in record.items() if k != "sem_seg_file_name"}
    with pytest.raises(BadSampleError, match="sem.png.*sem_seg_file_name"):
        mapper(without)
    with pytest.raises(BadSampleError, match="missing.png.*not found"):
        mapper({**record, "file_name": str(tmp_path / "missing.png")})


# --------------------------------------------------------------------------- instance
def _check_instances(out, expected, colour_aug, keeps_empty=True):
    image, instances = out["image"], out["instances"]
    masks = instances.gt_masks
    assert masks.dtype == torch.bool and masks.shape[1:] == image.shape[1:]
    if keeps_empty:  # the published mapper keeps instances a crop leaves empty
        assert instances.gt_classes.tolist() == [cat for cat, _ in expected]
    else:
        assert masks.flatten(1).any(1).all(), "empty masks must be dropped"
    assert instances.gt_classes.dtype == torch.int64
    labels = label_map_from_masks(masks)
    per_label = assert_masks_follow_image(image, labels, several_colours=(0,))
    colour_to_class = {tuple(rgb): cat for cat, rgb in expected}
    assert 7 not in instances.gt_classes.tolist(), "crowd instance kept"
    if not colour_aug:
        for k, cls in enumerate(instances.gt_classes.tolist()):
            if k + 1 in per_label:  # instances too thin for an interior are not checked
                assert colour_to_class[per_label[k + 1]] == cls
    return labels


@pytest.mark.parametrize("colour_aug", [True, False])
@pytest.mark.parametrize("seed", SEEDS[:5])
def test_instance_masks_follow_image(tmp_path, seed, colour_aug):
    record, expected = instance_sample(tmp_path)
    mapper = build_dataset_mapper(small_cfg("mask_former_instance", colour_aug), True)
    seed_all(seed)
    out = mapper(record)
    assert tuple(out["image"].shape[1:]) == (48, 48)
    _check_instances(out, expected, colour_aug)
    assert "annotations" not in out


def test_instance_without_augmentation_keeps_every_non_crowd_instance(tmp_path):
    record, expected = instance_sample(tmp_path)
    cfg = small_cfg("mask_former_instance", colour_aug=False)
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.MIN_SIZE_TRAIN = False, (48,)
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    out = build_dataset_mapper(cfg, True)(record)  # flipped or not: image and masks together
    assert out["instances"].gt_classes.tolist() == [cat for cat, _ in expected]
    image = out["image"].permute(1, 2, 0).numpy()
    for (cat, rgb), mask in zip(expected, out["instances"].gt_masks.numpy()):
        assert np.array_equal(mask, (image == np.array(rgb, np.uint8)).all(-1))


def test_instance_cropped_away_instances_stay_as_empty_masks(tmp_path):
    record, expected = instance_sample(tmp_path)
    cfg = small_cfg("mask_former_instance", colour_aug=False)
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.CROP.SIZE = [4, 4]  # a 4x4 window sees at most two instances
    mapper = build_dataset_mapper(cfg, True)
    counts = []
    for seed in range(20):
        seed_all(seed)
        instances = mapper(record)["instances"]
        assert instances.gt_classes.tolist() == [cat for cat, _ in expected]
        counts.append(int(instances.gt_masks.flatten(1).any(1).sum()))
    assert max(counts) <= 2 and min(counts) == 0


# --------------------------------------------------------------------------- panoptic
def _check_panoptic(out, expected, colour_aug):
    image, instances = out["image"], out["instances"]
    masks = instances.gt_masks
    # one instance per non-crowd segment, in the order of segments_info (empty if cropped away)
    assert instances.gt_classes.tolist() == [cat for cat, _ in expected.values()]
    labels = label_map_from_masks(masks)
    per_label = assert_masks_follow_image(image, labels, several_colours=(0,))
    colour_to_class = {rgb: cat for cat, rgb in expected.values()}
    if not colour_aug:
        for k, cls in enumerate(instances.gt_classes.tolist()):
            if k + 1 in per_label:
                assert colour_to_class[per_label[k + 1]] == cls, "panoptic id decoded wrongly"
        crowd = colour_mask(image, PALETTE_RGB[3])
        assert not masks[:, torch.from_numpy(crowd)].any(), "crowd segment kept"


@pytest.mark.parametrize("colour_aug", [True, False])
@pytest.mark.parametrize("seed", SEEDS[:5])
def test_panoptic_masks_follow_image_and_decode_to_classes(tmp_path, seed, colour_aug):
    record, expected = panoptic_sample(tmp_path, with_labels=True)
    mapper = build_dataset_mapper(small_cfg("mask_former_panoptic", colour_aug), True)
    seed_all(seed)
    out = mapper(record)
    _check_panoptic(out, expected, colour_aug)
    sem_seg = out["sem_seg"].numpy()
    # Category 4 covers two things and the crowd: several colours; void and padding: ignore.
    # The 32x40 crop only: the padding is not colour-jittered.
    image = out["image"][:, :32, :40]
    assert_masks_follow_image(image, sem_seg[:32, :40], several_colours=(4, IGNORE))
    assert (sem_seg[32:] == IGNORE).all() and (sem_seg[:, 40:] == IGNORE).all()
    if not colour_aug:
        assert (sem_seg[colour_mask(out["image"], IGNORE_RGB)] == IGNORE).all()


def test_panoptic_without_label_map_has_no_sem_seg(tmp_path):
    record, expected = panoptic_sample(tmp_path)
    out = build_dataset_mapper(small_cfg("mask_former_panoptic", False), True)(record)
    assert "sem_seg" not in out  # as published: "sem_seg" only from a label file
    _check_panoptic(out, expected, colour_aug=False)


def test_panoptic_without_augmentation_decodes_every_segment(tmp_path):
    record, expected = panoptic_sample(tmp_path)
    cfg = small_cfg("mask_former_panoptic", colour_aug=False)
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.MIN_SIZE_TRAIN = False, (48,)
    cfg.INPUT.SIZE_DIVISIBILITY = 80
    out = build_dataset_mapper(cfg, True)(record)
    assert out["instances"].gt_classes.tolist() == [cat for cat, _ in expected.values()]
    assert tuple(out["image"].shape[1:]) == (80, 80)
    image = out["image"].permute(1, 2, 0).numpy()[:48, :64]
    for (cat, rgb), mask in zip(expected.values(), out["instances"].gt_masks.numpy()):
        assert np.array_equal(mask[:48, :64], (image == np.array(rgb, np.uint8)).all(-1))
        assert not mask[48:].any() and not mask[:, 64:].any()


def test_panoptic_size_mismatch_names_both_files(tmp_path):
    record, _ = panoptic_sample(tmp_path)
    from PIL import Image

    Image.new("RGB", (60, 48)).save(tmp_path / "wrong_pan.png")
    mapper = build_dataset_mapper(small_cfg("mask_former_panoptic"), True)
    with pytest.raises(BadSampleError, match=r"wrong_pan\.png.*60x48.*pan\.png is 64x48"):
        mapper({**record, "pan_seg_file_name": str(tmp_path / "wrong_pan.png")})


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_detr_panoptic_masks_follow_image(tmp_path, seed):
    record, expected = panoptic_sample(tmp_path)
    cfg = small_cfg("detr_panoptic", colour_aug=False)
    cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = "absolute_range", [384, 600]
    seed_all(seed)
    out = build_dataset_mapper(cfg, True)(record)
    assert min(out["image"].shape[1:]) in (40, 56, 72) or max(out["image"].shape[1:]) % 32 == 0
    _check_panoptic(out, expected, colour_aug=False)


# --------------------------------------------------------------------------- LSJ
def _check_lsj(out, size=64):
    image, instances = out["image"], out["instances"]
    assert tuple(image.shape) == (3, size, size)
    pad = colour_mask(image, PAD_RGB)
    if "padding_mask" in out:  # the instance mapper's
        assert np.array_equal(out["padding_mask"].numpy(), pad)
    if pad.any():
        assert_padding_is_right_bottom_band(pad)
    for box, mask in zip(instances.gt_boxes.tensor.tolist(), instances.gt_masks.numpy()):
        ys, xs = np.where(mask)
        assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_coco_instance_lsj(tmp_path, seed):
    record, expected = instance_sample(tmp_path)
    seed_all(seed)
    cfg = small_cfg("coco_instance_lsj", False)
    cfg.INPUT.MASK_FORMAT = "bitmask"  # the sample has an RLE mask
    out = build_dataset_mapper(cfg, True)(record)
    assert "padding_mask" in out
    _check_lsj(out)
    _check_instances(out, expected, colour_aug=False, keeps_empty=False)


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_coco_panoptic_lsj(tmp_path, seed):
    record, expected = panoptic_sample(tmp_path)
    seed_all(seed)
    out = build_dataset_mapper(small_cfg("coco_panoptic_lsj", False), True)(record)
    _check_lsj(out)
    _check_panoptic(out, expected, colour_aug=False)


# --------------------------------------------------------------------------- test time
def test_test_mapper_resizes_and_keeps_original_size(tmp_path):
    record, _ = instance_sample(tmp_path)
    cfg = small_cfg("mask_former_instance")
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 1000
    out = build_dataset_mapper(cfg, is_train=False)(record)
    assert tuple(out["image"].shape) == (3, 96, 128)
    assert (out["height"], out["width"]) == (48, 64) and "annotations" not in out
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 100
    assert tuple(build_dataset_mapper(cfg, False)(record)["image"].shape) == (3, 75, 100)
    cfg.INPUT.MIN_SIZE_TEST = 0
    out = build_dataset_mapper(cfg, False)(record)
    image = out["image"].permute(1, 2, 0).numpy()
    assert image.shape == (48, 64, 3) and tuple(image[0, 0]) == BACKGROUND_RGB


# --------------------------------------------------------------------------- shipped configs
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_shipped_config_builds_its_mappers():
    """Image configs: the named training mapper and DatasetMapper for testing. Video configs
    (the published YouTube-VIS ones name no mapper) and the video quick start: the video
    mapper, selected by their video datasets, for both."""
    video = {CONFIGS / relative for relative in published_video_config_hashes()}
    video.add(CONFIGS / "ytvis_shapes/video_maskformer2_R18_quickstart.yaml")
    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert len(paths) == 109 and video <= set(paths)
    for path in paths:
        cfg = get_cfg()
        cfg.merge_from_file(str(path))
        train = build_dataset_mapper(cfg, is_train=True)
        test = build_dataset_mapper(cfg, is_train=False)
        if path in video:
            assert isinstance(train, YTVISDatasetMapper) and train.is_train, path
            assert isinstance(test, YTVISDatasetMapper) and not test.is_train, path
        else:
            assert not isinstance(train, YTVISDatasetMapper), path
            assert isinstance(test, DatasetMapper), path


def test_published_ade20k_semantic_and_coco_lsj_augmentations():
    from mask2former.data import transforms as T

    cfg = get_cfg()
    cfg.merge_from_file(
        str(CONFIGS / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml")
    )
    resize, crop, colour, flip = build_dataset_mapper(cfg, True).augmentations
    assert tuple(resize.short_edge_length) == tuple(int(x * 0.1 * 512) for x in range(5, 21))
    assert (resize.max_size, resize.is_range) == (2048, False)
    assert isinstance(crop, T.RandomCrop_CategoryAreaConstraint)
    assert crop.crop_aug.crop_type == "absolute"
    assert tuple(crop.crop_aug.crop_size) == (512, 512)
    assert isinstance(colour, T.ColorAugSSDTransform) and colour.is_rgb
    assert isinstance(flip, T.RandomFlip) and flip.horizontal

    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml"))
    flip, scale, fixed = build_dataset_mapper(cfg, True).augmentations
    assert (scale.min_scale, scale.max_scale, scale.target_height) == (0.1, 2.0, 1024)
    assert (fixed.crop_size, fixed.pad_value, fixed.seg_pad_value) == ((1024, 1024), 128.0, 255)


# --------------------------------------------------------------------------- published rules
@pytest.mark.parametrize(
    "mapper_name, key, value",
    [
        ("mask_former_semantic", "INPUT.RANDOM_FLIP", "none"),
        ("mask_former_panoptic", "INPUT.RANDOM_FLIP", "vertical"),
        ("mask_former_instance", "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.5),
        ("detr_panoptic", "INPUT.COLOR_AUG_SSD", True),
        ("coco_instance_lsj", "INPUT.CROP.ENABLED", True),
        ("coco_panoptic_lsj", "INPUT.COLOR_AUG_SSD", True),
    ],
)
def test_keys_the_published_mapper_ignores_are_refused(mapper_name, key, value):
    cfg = small_cfg(mapper_name, colour_aug=False)
    cfg.INPUT.CROP.ENABLED = key == "INPUT.CROP.ENABLED" or mapper_name.startswith("mask")
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=.*{mapper_name}"):
        build_dataset_mapper(cfg, True)


def test_mappers_take_cfg_and_is_train_and_refuse_test_mode(tmp_path):
    record = semantic_sample(tmp_path)
    cls = DATASET_MAPPER_REGISTRY.get("mask_former_semantic")
    cfg = small_cfg("mask_former_semantic")
    assert cls(cfg, True).is_train and not cls(cfg, False).is_train
    with pytest.raises(ValueError, match="training samples only"):
        cls(cfg, False)(record)
    with pytest.raises(ValueError, match="INPUT.DATASET_MAPPER_NAME"):
        DatasetMapper(cfg, True)


def test_mask_format_is_checked_and_bitmask_takes_rle(tmp_path):
    record, expected = instance_sample(tmp_path)
    cfg = small_cfg("coco_instance_lsj", colour_aug=False)
    cfg.INPUT.MASK_FORMAT = "rle"
    with pytest.raises(ConfigError, match="INPUT.MASK_FORMAT.*'rle'"):
        build_dataset_mapper(cfg, True)
    import pycocotools.mask as mask_util

    polygons = build_dataset_mapper(small_cfg("coco_instance_lsj", False), True)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    bitmask = build_dataset_mapper(cfg, True)
    record["annotations"] = [
        a for a in record["annotations"] if isinstance(a["segmentation"], list)
    ]
    with pytest.raises(BadSampleError, match="needs polygon annotations"):
        polygons(
            dict(
                record,
                annotations=[
                    dict(a, segmentation={"size": [48, 64], "counts": "0"})
                    for a in record["annotations"]
                ],
            )
        )
    as_rle = dict(record, annotations=[dict(a) for a in record["annotations"]])
    for a in as_rle["annotations"]:
        a["segmentation"] = mask_util.merge(mask_util.frPyObjects(a["segmentation"], 48, 64))
    for seed in range(4):
        seed_all(seed)
        from_polygons = polygons(record)
        seed_all(seed)
        from_rle = bitmask(as_rle)
        # same instances; the RLE masks move as pixels, the polygons as points: masks agree
        # on all but the pixels a polygon boundary crosses
        assert (
            from_rle["instances"].gt_classes.tolist()
            == from_polygons["instances"].gt_classes.tolist()
        )
        a, b = from_rle["instances"].gt_masks, from_polygons["instances"].gt_masks
        assert (a ^ b).sum() <= 0.1 * max(int(b.sum()), 1)
        assert not a[:, from_rle["padding_mask"]].any(), "an RLE mask leaks into the padding"
