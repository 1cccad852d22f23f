"""Dataset-folder conversions: semantic labels -> COCO panoptic (-> semantic again), instance
masks -> COCO instance JSON (-> masks again), RGB-coloured labels -> class ids; and the
``tools/convert_dataset.py`` command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mask2former.data.datasets import DatasetFormatError
from mask2former.data.datasets.folder_convert import (
    convert_masks_folder,
    convert_rgb_folder,
    convert_semantic_folder,
    rgb_to_ids,
    semantic_to_panoptic,
)
from mask2former.data.detection_utils import read_image, semantic_from_panoptic
from mask2former.utils.panoptic_png import rgb2id
from tests.data import _folder_samples as S

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- semantic -> panoptic
def test_things_split_by_connected_components_and_stuff_stays_one_segment():
    labels = np.array(
        [
            [0, 2, 0, 0, 1],
            [2, 0, 0, 2, 2],
            [255, 0, 1, 0, 0],
        ]
    )
    ids, segments = semantic_to_panoptic(labels, [2], 3, 255, connectivity=8)
    by_class = [s["category_id"] for s in segments]
    assert by_class == [0, 1, 2, 2]  # stuff 1 is one segment though in two pieces
    assert ids[2, 0] == 0  # ignored -> void
    assert {s["id"] for s in segments} == set(np.unique(ids)) - {0}
    assert segments[2]["area"] == 2 and segments[2]["bbox"] == [0, 0, 2, 2]  # diagonal: joined
    _, segments4 = semantic_to_panoptic(labels, [2], 3, 255, connectivity=4)
    assert [s["category_id"] for s in segments4] == [0, 1, 2, 2, 2]  # 4-connected: apart
    _, all_stuff = semantic_to_panoptic(labels, [], 3, 255)
    assert [s["category_id"] for s in all_stuff] == [0, 1, 2]  # the choice is per class
    with pytest.raises(ValueError, match=r"label values \[7\] are neither class ids 0..2"):
        semantic_to_panoptic(np.array([[7, 0]]), [], 3, 255)


def test_semantic_to_panoptic_to_semantic_gives_the_label_maps_back(tmp_path):
    root = S.semantic_folder(tmp_path / "data")
    assert convert_semantic_folder(str(root)) == {"train": 3, "val": 2}
    for split, count in (("train", 3), ("val", 2)):
        panoptic = json.loads((root / split / "panoptic.json").read_text())
        assert [c["id"] for c in panoptic["categories"]] == [1, 2, 3, 4]
        assert [c["isthing"] for c in panoptic["categories"]] == [0, 0, 1, 1]
        for i, ann in enumerate(panoptic["annotations"]):
            ids = rgb2id(read_image(str(root / split / "panoptic" / ann["file_name"]), "RGB"))
            segments = [{**s, "category_id": s["category_id"] - 1} for s in ann["segments_info"]]
            np.testing.assert_array_equal(
                semantic_from_panoptic(ids, segments, 255), S.label_map(i)
            )
            assert [s["category_id"] for s in segments] == [0, 1, 2, 2, 3]  # two cars
        assert len(panoptic["annotations"]) == count
        instances = COCO(str(root / split / "instances.json"))
        assert sorted(instances.getCatIds()) == [3, 4]
        for i in range(count):
            anns = instances.loadAnns(instances.getAnnIds(imgIds=[i]))
            masks = [instances.annToMask(a).astype(bool) for a in anns]
            np.testing.assert_array_equal(
                sum(m.astype(int) for m in masks[:2]), S.label_map(i) == 2
            )
            np.testing.assert_array_equal(masks[2], S.label_map(i) == 3)


def test_conversion_refuses_to_overwrite_and_names_a_bad_label_file(tmp_path):
    root = S.semantic_folder(tmp_path / "data", {"train": 2})
    convert_semantic_folder(str(root))
    with pytest.raises(FileExistsError, match="panoptic.json"):
        convert_semantic_folder(str(root))
    labels = S.label_map(1)
    labels[0, 0] = 9
    Image.fromarray(labels).save(root / "train" / "labels" / "im1.png")
    with pytest.raises(DatasetFormatError, match=r"labels/im1\.png: label values \[9\]"):
        convert_semantic_folder(str(root), overwrite=True)


# ----------------------------------------------------------------------------- masks -> COCO
def test_instance_masks_to_coco_rle_gives_the_masks_back(tmp_path):
    root = S.masks_folder(tmp_path / "data", count=3)
    assert convert_masks_folder(str(root)) == {"train": 9}
    coco = COCO(str(root / "train" / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["car", "person"]
    for i in range(3):
        assert coco.imgs[i]["file_name"] == f"im{i}.png"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        masks = S.instance_masks(i)
        assert [a["category_id"] for a in anns] == [1, 1, 2]
        for ann, expected in zip(anns, masks.values()):
            np.testing.assert_array_equal(coco.annToMask(ann), expected)
            assert ann["area"] == expected.sum()


def test_instance_masks_to_coco_polygons_give_the_masks_back_but_holes(tmp_path):
    root = S.masks_folder(tmp_path / "data", count=2)
    ring = np.zeros(S.SIZE, bool)
    ring[2:9, 2:9], ring[4:7, 4:7] = True, False
    single = np.zeros(S.SIZE, bool)
    single[0, 0] = single[1, 1] = True  # diagonal pixels: one 8-connected outline
    Image.fromarray(ring.astype(np.uint8)).save(root / "train/masks/im1/car_ring.png")
    Image.fromarray(single.astype(np.uint8)).save(root / "train/masks/im1/person_1.png")
    convert_masks_folder(str(root), polygons=True)
    coco = COCO(str(root / "train" / "instances.json"))
    for i in range(2):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        expected = list(S.instance_masks(i).values())
        if i == 1:  # sorted file names: car_0, car_1, car_ring, person_0, person_1
            expected = expected[:2] + [ring] + expected[2:] + [single]
        assert len(anns) == len(expected)
        for ann, mask in zip(anns, expected):
            assert isinstance(ann["segmentation"], list)
            filled = np.zeros(S.SIZE, bool)
            filled[2:9, 2:9] = True  # the ring's outline: its hole is lost
            np.testing.assert_array_equal(coco.annToMask(ann), filled if mask is ring else mask)


def test_converted_masks_register_as_coco_instances(tmp_path):
    from mask2former.data import DatasetCatalog
    from mask2former.data.datasets.folder_registration import register_folder, unregister_folder

    root = S.masks_folder(tmp_path / "data")
    convert_masks_folder(str(root))
    register_folder(str(root), name="_folder_masks_converted")
    try:
        from_json = DatasetCatalog.get("_folder_masks_converted_train")
        assert [a["category_id"] for a in from_json[1]["annotations"]] == [0, 0, 1]
    finally:
        unregister_folder(str(root))


# ----------------------------------------------------------------------------- RGB -> ids
PALETTE = {"sky": [0, 0, 255], "road": [128, 64, 128], "car": [255, 0, 0], "person": [0, 255, 0]}


def _rgb(labels: np.ndarray) -> np.ndarray:
    colors = np.zeros((256, 3), np.uint8)
    for k, name in enumerate(S.CLASSES):
        colors[k] = PALETTE[name]
    colors[255] = [0, 0, 0]
    return colors[labels]


def test_rgb_to_ids_maps_palette_colours_and_lists_unknown_ones():
    palette = {(0, 0, 255): 0, (255, 0, 0): 2, (0, 0, 0): 255}
    rgb = np.array([[[0, 0, 255], [255, 0, 0]], [[0, 0, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_array_equal(rgb_to_ids(rgb, palette), [[0, 2], [255, 0]])
    rgb[0, 0] = [9, 9, 9]
    with pytest.raises(ValueError, match=r"1 colour\(s\) not in the palette: \[9, 9, 9\] \(1 px\)"):
        rgb_to_ids(rgb, palette)


def test_rgb_label_folder_converts_in_place_keeping_the_originals(tmp_path):
    root = S.semantic_folder(tmp_path / "data", {"train": 2}, palette=PALETTE)
    for i in range(2):
        Image.fromarray(_rgb(S.label_map(i))).save(root / "train" / "labels" / f"im{i}.png")
    with pytest.raises(DatasetFormatError, match="0, 0, 0"):  # the ignored pixels' colour
        convert_rgb_folder(str(root))
    S.write_spec(root, palette=PALETTE, ignore_colors=[[0, 0, 0]])
    assert convert_rgb_folder(str(root)) == {"train": 2}
    for i in range(2):
        labels = read_image(str(root / "train" / "labels" / f"im{i}.png"))
        assert labels.ndim == 2
        np.testing.assert_array_equal(labels, S.label_map(i))
        assert read_image(str(root / "train" / "labels_rgb" / f"im{i}.png")).shape == (16, 20, 3)
    assert convert_rgb_folder(str(root)) == {"train": 2}  # again: from labels_rgb/


# ----------------------------------------------------------------------------- command line
def test_convert_command_describes_and_converts_a_folder(tmp_path, capsys):
    tool = _tool("convert_dataset")
    root = S.semantic_folder(tmp_path / "data", {"train": 2})
    (root / "dataset.yaml").unlink()
    tool.main(tool.parse_args(["describe", str(root), "--classes", "sky,road,car,person"]))
    assert "wrote" in capsys.readouterr().out
    tool.main(tool.parse_args(["sem-to-panoptic", str(root), "--things", "car,person"]))
    assert "{'train': 2}" in capsys.readouterr().out
    panoptic = json.loads((root / "train" / "panoptic.json").read_text())
    assert [c["name"] for c in panoptic["categories"] if c["isthing"]] == ["car", "person"]
    masks = S.masks_folder(tmp_path / "masks")
    tool.main(tool.parse_args(["masks-to-coco", str(masks), "--polygons", "--split", "train"]))
    coco = COCO(str(masks / "train" / "instances.json"))
    assert all(isinstance(a["segmentation"], list) for a in coco.anns.values())
