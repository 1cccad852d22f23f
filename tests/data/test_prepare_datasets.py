"""The preparation scripts in datasets/, run end to end on tiny generated originals."""

import importlib
import json
import pickle
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from scipy.io import savemat

import mask2former.data.datasets.builtin_meta as M
from mask2former.data import MetadataCatalog
from mask2former.data.datasets import load_coco_json, load_coco_panoptic_json, load_sem_seg
from mask2former.utils.panoptic_png import id2rgb, rgb2id

SCRIPTS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module


def _save(array, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_coco_semantic_from_panoptic(tmp_path, script):
    prep = script("prepare_coco_semantic_annos_from_panoptic")
    ids = np.zeros((4, 6), np.int64)
    ids[:, :3] = 1000  # person (id 1 -> 0)
    ids[:, 3:] = 70000  # rug-merged (id 200 -> 132)
    ids[0, 0] = 0  # unlabeled
    segments = [{"id": 1000, "category_id": 1, "iscrowd": 1}, {"id": 70000, "category_id": 200}]
    for split in ("train2017", "val2017"):
        _save(id2rgb(ids), tmp_path / "coco" / f"panoptic_{split}" / "a.png")
        ann = {"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}]}
        (tmp_path / "coco" / "annotations").mkdir(exist_ok=True)
        (tmp_path / "coco" / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(ann))
    prep.main(str(tmp_path), workers=2)
    out = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "a.png"))
    expected = np.where(ids == 1000, 0, 132).astype(np.uint8)
    expected[0, 0] = 255
    np.testing.assert_array_equal(out, expected)
    names = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg").stuff_classes
    assert (names[0], names[132]) == ("person", "rug-merged")


def test_ade20k_semantic_shift(tmp_path, script):
    prep = script("prepare_ade20k_sem_seg")
    label = np.array([[0, 1, 150], [2, 0, 75]], np.uint8)
    for split in ("training", "validation"):
        _save(label, tmp_path / "ADEChallengeData2016" / "annotations" / split / "ADE_x.png")
    prep.main(str(tmp_path), workers=1)
    out = np.asarray(
        Image.open(tmp_path / "ADEChallengeData2016/annotations_detectron2/training/ADE_x.png")
    )
    np.testing.assert_array_equal(out, [[255, 0, 149], [1, 255, 74]])


def _ade_originals(root: Path) -> None:
    """One 8x10 image: wall (stuff) left, floor (stuff) right, one bed and one person instance,
    and a bed-class region in the semantic map that no instance covers."""
    base = root / "ADEChallengeData2016"
    semantic = np.full((8, 10), 1, np.uint8)  # wall = class 1
    semantic[:, 5:] = 4  # floor = class 4
    semantic[1:4, 1:4] = 8  # bed = class 8 (150-id 7)
    semantic[6:8, 0:2] = 8  # bed pixels without an instance -> void
    semantic[5:7, 6:9] = 13  # person = class 13 (150-id 12)
    instance = np.zeros((8, 10, 3), np.uint8)
    instance[1:4, 1:4] = (1, 1, 0)  # instance class 1 = bed
    instance[5:7, 6:9] = (4, 2, 0)  # instance class 4 = person
    for split in ("training", "validation"):
        _save(np.zeros((8, 10, 3), np.uint8), base / "images" / split / "ADE_1.jpg")
        _save(semantic, base / "annotations" / split / "ADE_1.png")
        _save(instance, base / "annotations_instance" / split / "ADE_1.png")


def test_ade20k_panoptic_and_instance(tmp_path, script):
    _ade_originals(tmp_path)
    script("prepare_ade20k_pan_seg").main(str(tmp_path), workers=1)
    script("prepare_ade20k_ins_seg").main(str(tmp_path), workers=1)
    base = tmp_path / "ADEChallengeData2016"
    (rec,) = load_coco_panoptic_json(
        str(base / "ade20k_panoptic_val.json"),
        str(base / "images/validation"),
        str(base / "ade20k_panoptic_val"),
        M.ade20k_panoptic_meta(),
    )
    names = M.ade20k_panoptic_meta()["stuff_classes"]
    got = sorted((names[s["category_id"]], s["isthing"], s["area"]) for s in rec["segments_info"])
    assert got == [
        ("bed", True, 9),
        ("floor", False, 40 - 6),
        ("person", True, 6),
        ("wall", False, 40 - 9 - 4),
    ]
    ids = rgb2id(np.asarray(Image.open(rec["pan_seg_file_name"])))
    assert (ids[6:8, 0:2] == 0).all()  # thing class without an instance: void
    assert (rec["height"], rec["width"]) == (8, 10)

    records = load_coco_json(
        str(base / "ade20k_instance_val.json"),
        str(base / "images/validation"),
        "ade20k_instance_val",
    )
    things = MetadataCatalog.get("ade20k_instance_val").thing_classes
    annos = sorted(records[0]["annotations"], key=lambda a: a["area"])
    assert [(things[a["category_id"]], a["bbox"]) for a in annos] == [
        ("person", [6.0, 5.0, 3.0, 2.0]),
        ("bed", [1.0, 1.0, 3.0, 3.0]),
    ]
    bed = np.zeros((8, 10), np.uint8)
    bed[1:4, 1:4] = 1
    np.testing.assert_array_equal(mask_util.decode(annos[1]["segmentation"]), bed)


def test_ade20k_instance_with_two_classes_is_an_error(tmp_path, script):
    prep = script("prepare_ade20k_ins_seg")
    instance = np.zeros((4, 4, 3), np.uint8)
    instance[0, :2] = (1, 1, 0)
    instance[1, :2] = (2, 1, 0)
    with pytest.raises(ValueError, match=r"instance 1 has class values \[1, 2\]"):
        prep.ade_instances(instance, script("prepare_common").load_ade20k_instance_mapping())


def test_ade20k_full_16bit_labels(tmp_path, script):
    prep = script("prepare_ade20k_full_sem_seg")
    seg = np.zeros((600, 1000, 3), np.uint8)
    # class 2978 (wall -> train id 0): R = 2978 // 256 * 10, G = 2978 % 256
    seg[:, :500] = (2978 // 256 * 10, 2978 % 256, 0)
    seg[:, 500:] = (3148 // 256 * 10, 3148 % 256, 0)  # adding machine -> 846
    seg[:50, :50] = (0, 5, 0)  # class 5: not among the 847 -> ignore
    folder = "ADE20K_2021_17_01/images/ADE/validation/x"
    _save(np.full((600, 1000, 3), 90, np.uint8), tmp_path / folder / "ADE_val_00000001.jpg")
    _save(seg, tmp_path / folder / "ADE_val_00000001_seg.png")
    index = {"folder": [folder], "filename": ["ADE_val_00000001.jpg"]}
    (tmp_path / "ADE20K_2021_17_01" / "index_ade20k.pkl").write_bytes(pickle.dumps(index))
    prep.main(str(tmp_path), workers=1)
    base = tmp_path / "ADE20K_2021_17_01"
    (rec,) = load_sem_seg(
        str(base / "annotations_detectron2/validation"),
        str(base / "images_detectron2/validation"),
        gt_ext="tif",
    )
    label = np.asarray(Image.open(rec["sem_seg_file_name"]))
    assert label.dtype == np.uint16 and label.shape == (512, 853)  # shorter side 600 -> 512
    assert (label[50:, :420] == 0).all() and (label[:, 440:] == 846).all() and label[0, 0] == 65535
    assert Image.open(rec["file_name"]).size == (853, 512)


def test_coco_stuff_10k(tmp_path, script):
    prep = script("prepare_coco_stuff_10k_sem_seg")
    base = tmp_path / "coco" / "coco_stuff_10k"
    label = np.array([[0, 1, 92], [182, 91, 1]], np.uint8)  # 91 is no COCO id -> ignore
    (base / "annotations").mkdir(parents=True)
    (base / "imageLists").mkdir()
    for split, stem in (
        ("train", "COCO_train2014_000000000077"),
        ("test", "COCO_train2014_000000000078"),
    ):
        _save(np.zeros((2, 3, 3), np.uint8), base / "images" / f"{stem}.jpg")
        savemat(base / "annotations" / f"{stem}.mat", {"S": label})
        (base / "imageLists" / f"{split}.txt").write_text(stem + "\n")
    prep.main(str(tmp_path), workers=1)
    (rec,) = load_sem_seg(
        str(base / "annotations_detectron2/test"), str(base / "images_detectron2/test")
    )
    out = np.asarray(Image.open(rec["sem_seg_file_name"]))
    names = MetadataCatalog.get("coco_2017_test_stuff_10k_sem_seg").stuff_classes
    assert out[0, 0] == 255 and out[1, 1] == 255
    assert (names[out[0, 1]], names[out[0, 2]], names[out[1, 0]]) == ("person", "banner", "wood")
