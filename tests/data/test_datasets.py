"""Format loaders on small generated files, their errors, metadata tables and builtin names."""

import json
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from pycocotools.coco import COCO

import mask2former.data.datasets.builtin_meta as M
from mask2former.data import DatasetCatalog, MetadataCatalog
from mask2former.data.datasets import (
    DatasetFormatError,
    load_cityscapes_instances,
    load_cityscapes_panoptic,
    load_cityscapes_semantic,
    load_coco_json,
    load_coco_panoptic_json,
    load_sem_seg,
)
from mask2former.structures import BoxMode
from tests.published import CONFIG_DIR, DATASETS_DATA_DIR, METADATA_DIR, REPO_ROOT


# ----------------------------------------------------------------------------- COCO instance
def _coco_instance_file(tmp_path: Path) -> Path:
    """Two images: one with a polygon, a compressed RLE and an uncompressed crowd RLE; one empty."""
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 10:22] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    crowd = {"size": [20, 30], "counts": [100, 20, 480]}
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 18,
            "bbox": [2, 3, 4, 5],
            "iscrowd": 0,
            "area": 20,
            "segmentation": [[2, 3, 6, 3, 6, 8, 2, 8], [1, 1, 2]],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10, 5, 12, 4],
            "iscrowd": 0,
            "area": 48,
            "segmentation": rle,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 5, 3, 20],
            "iscrowd": 1,
            "area": 20,
            "segmentation": crowd,
        },
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.jpg", "height": 8, "width": 9},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _decode(segm, height, width):
    if isinstance(segm, list):
        segm = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    return mask_util.decode(segm)


def test_coco_instance_loader_matches_pycocotools(tmp_path):
    path = _coco_instance_file(tmp_path)
    records = load_coco_json(str(path), str(tmp_path))
    assert [r["file_name"] for r in records] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert records[1]["annotations"] == []  # images without annotations are kept
    reference = COCO(str(path))
    for ann, ref in zip(records[0]["annotations"], reference.loadAnns([1, 2, 3])):
        assert ann["bbox_mode"] == BoxMode.XYWH_ABS and ann["bbox"] == ref["bbox"]
        assert ann["iscrowd"] == ref["iscrowd"]
        np.testing.assert_array_equal(
            _decode(ann["segmentation"], 20, 30), reference.annToMask(ref)
        )
    # the invalid 3-number polygon is dropped, the valid one kept
    assert len(records[0]["annotations"][0]["segmentation"]) == 1
    # ids 1 (person) and 18 (dog) -> contiguous 0 and 1
    assert [a["category_id"] for a in records[0]["annotations"]] == [1, 0, 0]


def test_coco_instance_uses_the_registered_metadata_map(tmp_path):
    path = _coco_instance_file(tmp_path)
    records = load_coco_json(str(path), str(tmp_path), "coco_2017_val")
    # COCO's contiguous ids: person 0, dog 16
    assert [a["category_id"] for a in records[0]["annotations"]] == [16, 0, 0]


def test_truncated_json_names_the_file(tmp_path):
    path = _coco_instance_file(tmp_path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DatasetFormatError, match=re.escape(str(path)) + ".*not valid JSON"):
        load_coco_json(str(path), str(tmp_path))


def test_json_missing_a_section_names_it(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetFormatError, match="annotations"):
        load_coco_json(str(path), str(tmp_path))


def test_unknown_category_names_file_image_and_id(tmp_path):
    path = _coco_instance_file(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError) as e:
        load_coco_json(str(path), str(tmp_path), "coco_2017_val")
    assert str(path) in str(e.value) and "a.jpg" in str(e.value) and "999" in str(e.value)


def test_missing_image_file_and_root_are_named(tmp_path):
    path = _coco_instance_file(tmp_path)
    (tmp_path / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "b.jpg"))):
        load_coco_json(str(path), str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_coco_json(str(path), str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_coco_json(str(tmp_path / "missing.json"), str(tmp_path))


# ----------------------------------------------------------------------------- COCO panoptic
def _rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)


def _panoptic_files(tmp_path: Path) -> tuple[Path, dict]:
    (tmp_path / "img").mkdir()
    (tmp_path / "pan").mkdir()
    ids = np.zeros((6, 8), np.int64)
    ids[:, :4] = 300  # stuff "wall-other-merged" (id 199), segment id > 255 to use G
    ids[:, 4:] = 70000  # stuff "grass" (id 193... here: 193) uses the B channel
    ids[1:3, 1:3] = 5  # thing "car" (id 3)
    Image.fromarray(_rgb(ids)).save(tmp_path / "pan" / "0001.png")
    (tmp_path / "img" / "0001.jpg").write_bytes(b"")
    segments = [
        {"id": 5, "category_id": 3, "iscrowd": 0, "area": 4},
        {"id": 300, "category_id": 199, "iscrowd": 0, "area": 20},
        {"id": 70000, "category_id": 193, "iscrowd": 0, "area": 24},
    ]
    data = {
        "images": [{"id": 1, "file_name": "0001.jpg", "height": 6, "width": 8}],
        "annotations": [{"image_id": 1, "file_name": "0001.png", "segments_info": segments}],
        "categories": M.load_table("coco_panoptic_133"),
    }
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(data))
    return path, M.coco_panoptic_meta()


def test_coco_panoptic_loader_and_png_ids(tmp_path):
    path, meta = _panoptic_files(tmp_path)
    (record,) = load_coco_panoptic_json(
        str(path), str(tmp_path / "img"), str(tmp_path / "pan"), meta
    )
    assert record["file_name"] == str(tmp_path / "img" / "0001.jpg")
    assert (record["height"], record["width"]) == (6, 8)
    png = np.asarray(Image.open(record["pan_seg_file_name"]), dtype=np.int64)
    decoded = png[..., 0] + 256 * png[..., 1] + 256**2 * png[..., 2]
    assert sorted(np.unique(decoded)) == sorted(s["id"] for s in record["segments_info"])
    by_id = {s["id"]: s for s in record["segments_info"]}
    names = MetadataCatalog.get("coco_2017_val_panoptic").stuff_classes
    assert names[by_id[5]["category_id"]] == "car" and by_id[5]["isthing"]
    assert names[by_id[70000]["category_id"]] == "grass-merged" and not by_id[70000]["isthing"]
    for seg_id, seg in by_id.items():
        assert seg["area"] == (decoded == seg_id).sum()


def test_coco_panoptic_errors_name_the_png_and_the_category(tmp_path):
    path, meta = _panoptic_files(tmp_path)
    args = (str(path), str(tmp_path / "img"), str(tmp_path / "pan"), meta)
    with pytest.raises(FileNotFoundError, match="semantic label PNG.*" + re.escape(str(tmp_path))):
        load_coco_panoptic_json(*args, sem_seg_dir=str(tmp_path / "img"))
    data = json.loads(path.read_text())
    data["annotations"][0]["segments_info"][1]["category_id"] = 250
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="0001.jpg.*category id 250"):
        load_coco_panoptic_json(*args)
    (tmp_path / "pan" / "0001.png").unlink()
    data["annotations"][0]["segments_info"][1]["category_id"] = 199
    path.write_text(json.dumps(data))
    with pytest.raises(
        FileNotFoundError, match="panoptic PNG.*" + re.escape(str(tmp_path / "pan" / "0001.png"))
    ):
        load_coco_panoptic_json(*args)


# ----------------------------------------------------------------------------- image + label pairs
def test_sem_seg_pairs_png(tmp_path):
    for sub in ("img/a", "gt/a"):
        (tmp_path / sub).mkdir(parents=True)
    for stem in ("x", "a/y"):
        (tmp_path / "img" / f"{stem}.jpg").write_bytes(b"")
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "gt" / f"{stem}.png")
    records = load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "img"))
    assert [(r["file_name"], r["sem_seg_file_name"]) for r in records] == [
        (str(tmp_path / "img/a/y.jpg"), str(tmp_path / "gt/a/y.png")),
        (str(tmp_path / "img/x.jpg"), str(tmp_path / "gt/x.png")),
    ]
    (tmp_path / "img" / "z.jpg").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=re.escape(str(tmp_path / "gt" / "z.png"))):
        load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "img"))


def test_ade20k_full_16bit_tiff_labels(tmp_path):
    """Train ids above 255 and the 65535 ignore value survive the TIFF round trip."""
    import cv2

    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    label = np.array([[0, 255, 256], [846, 65535, 300]], np.uint16)
    Image.fromarray(label).save(tmp_path / "gt" / "ADE_train_00000001.tif")
    (tmp_path / "img" / "ADE_train_00000001.jpg").write_bytes(b"")
    (record,) = load_sem_seg(str(tmp_path / "gt"), str(tmp_path / "img"), gt_ext="tif")
    assert record["sem_seg_file_name"].endswith(".tif")
    np.testing.assert_array_equal(np.asarray(Image.open(record["sem_seg_file_name"])), label)
    np.testing.assert_array_equal(
        cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED), label
    )
    meta = MetadataCatalog.get("ade20k_full_sem_seg_train")
    assert meta.ignore_label == 65535 and len(meta.stuff_classes) == 847
    assert meta.sem_seg_root.endswith("ADE20K_2021_17_01/annotations_detectron2/training")


# ----------------------------------------------------------------------------- Cityscapes
def _cityscapes_tree(tmp_path: Path) -> tuple[Path, Path]:
    image_dir, gt_dir = tmp_path / "leftImg8bit" / "val", tmp_path / "gtFine" / "val"
    base = "frankfurt_000000_000294"
    (image_dir / "frankfurt").mkdir(parents=True)
    (gt_dir / "frankfurt").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(
        image_dir / "frankfurt" / f"{base}_leftImg8bit.png"
    )
    inst = np.full((6, 10), 7, np.uint16)  # road
    inst[0:2, 0:3] = 26000  # car #0
    inst[3:6, 5:7] = 26001  # car #1
    inst[4:6, 0:2] = 24  # a crowd of persons
    inst[0:1, 8:10] = 29000  # caravan: has instances but is not evaluated
    Image.fromarray(inst).save(gt_dir / "frankfurt" / f"{base}_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((6, 10), np.uint8)).save(
        gt_dir / "frankfurt" / f"{base}_gtFine_labelTrainIds.png"
    )
    return image_dir, gt_dir


def test_cityscapes_semantic_and_instance_naming(tmp_path):
    image_dir, gt_dir = _cityscapes_tree(tmp_path)
    (sem,) = load_cityscapes_semantic(str(image_dir), str(gt_dir))
    assert sem["sem_seg_file_name"].endswith(
        "frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"
    )
    assert (sem["height"], sem["width"]) == (6, 10)
    (rec,) = load_cityscapes_instances(str(image_dir), str(gt_dir))
    inst = np.asarray(
        Image.open(gt_dir / "frankfurt" / "frankfurt_000000_000294_gtFine_instanceIds.png")
    )
    things = MetadataCatalog.get("cityscapes_fine_instance_seg_val").thing_classes
    got = sorted(
        (things[a["category_id"]], a["iscrowd"], tuple(a["bbox"])) for a in rec["annotations"]
    )
    assert got == [("car", 0, (0, 0, 3, 2)), ("car", 0, (5, 3, 7, 6)), ("person", 1, (0, 4, 2, 6))]
    for a in rec["annotations"]:
        assert a["bbox_mode"] == BoxMode.XYXY_ABS
        assert mask_util.decode(a["segmentation"]).sum() == a["area"]
    car = next(a for a in rec["annotations"] if a["bbox"] == [5.0, 3.0, 7.0, 6.0])
    np.testing.assert_array_equal(mask_util.decode(car["segmentation"]), inst == 26001)


def test_cityscapes_missing_label_is_named(tmp_path):
    image_dir, gt_dir = _cityscapes_tree(tmp_path)
    missing = gt_dir / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_cityscapes_semantic(str(image_dir), str(gt_dir))


def test_cityscapes_panoptic_naming_and_train_ids(tmp_path):
    image_dir, gt_dir = _cityscapes_tree(tmp_path)
    pan_dir = tmp_path / "gtFine" / "cityscapes_panoptic_val"
    pan_dir.mkdir()
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(
        pan_dir / "frankfurt_000000_000294_gtFine_panoptic.png"
    )
    ann = {
        "image_id": "frankfurt_000000_000294",
        "file_name": "frankfurt_000000_000294_gtFine_panoptic.png",
        "segments_info": [
            {"id": 7, "category_id": 7, "iscrowd": 0, "area": 30},
            {"id": 26000001, "category_id": 26, "iscrowd": 0, "area": 6},
        ],
    }
    (tmp_path / "gtFine" / "pan.json").write_text(json.dumps({"annotations": [ann]}))
    meta = M.cityscapes_panoptic_meta()
    (rec,) = load_cityscapes_panoptic(
        str(image_dir), str(pan_dir), str(tmp_path / "gtFine" / "pan.json"), meta
    )
    assert rec["file_name"] == str(
        image_dir / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png"
    )
    assert rec["sem_seg_file_name"] == str(
        gt_dir / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    )
    # road (label id 7) -> train id 0, car (26) -> train id 13
    assert [(s["category_id"], s["isthing"]) for s in rec["segments_info"]] == [
        (0, False),
        (13, True),
    ]


# ----------------------------------------------------------------------------- metadata tables
def test_package_tables_equal_the_reference():
    paths = sorted(METADATA_DIR.glob("*.json"))
    assert len(paths) == 9, paths  # the published tables listed in tests/reference/README.md
    for path in paths:
        assert json.loads(path.read_text()) == M.load_table(path.stem), path.name


def test_metadata_sizes_and_id_maps():
    # Panoptic metadata follows the published Mask2Former: thing_classes lists every category
    # (indexed by contiguous id, like stuff_classes); the thing id map holds the things only.
    panoptic_things = {
        "coco_2017_val_panoptic": 80,
        "ade20k_panoptic_val": 100,
        "mapillary_vistas_panoptic_val": 37,
        "cityscapes_fine_panoptic_val": 8,
    }
    for name, n_things in panoptic_things.items():
        meta = MetadataCatalog.get(name)
        assert len(meta.thing_dataset_id_to_contiguous_id) == n_things, name
        assert meta.thing_classes == meta.stuff_classes, name
    sizes = {
        "coco_2017_val_panoptic": (133, 133),
        "coco_2017_val": (None, 80),
        "coco_2017_test_stuff_10k_sem_seg": (171, None),
        "ade20k_sem_seg_val": (150, None),
        "ade20k_panoptic_val": (150, 150),
        "ade20k_instance_val": (None, 100),
        "ade20k_full_sem_seg_val": (847, None),
        "mapillary_vistas_sem_seg_val": (65, None),
        "mapillary_vistas_panoptic_val": (65, 65),
        "cityscapes_fine_sem_seg_val": (19, 8),
        "cityscapes_fine_panoptic_val": (19, 19),
    }
    for name, (n_stuff, n_thing) in sizes.items():
        meta = MetadataCatalog.get(name)
        assert len(meta.get("stuff_classes", [])) == (n_stuff or 0), name
        assert len(meta.get("thing_classes", [])) == (n_thing or 0), name
        stuff_map = meta.get("stuff_dataset_id_to_contiguous_id", {})
        thing_map = meta.get("thing_dataset_id_to_contiguous_id", {})
        for id_map in (stuff_map, thing_map):
            assert len(set(id_map.values())) == len(id_map), name  # injective
        if n_stuff and stuff_map:  # stuff maps reach every contiguous id
            if name.startswith("cityscapes"):
                stuff_map = {**stuff_map, **thing_map}
            assert sorted(stuff_map.values()) == list(range(n_stuff)), name
    coco = MetadataCatalog.get("coco_2017_val")
    assert sorted(coco.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    # COCO panoptic: things come first, so a thing's contiguous id indexes both class lists
    pan = MetadataCatalog.get("coco_2017_val_panoptic")
    for i in pan.thing_dataset_id_to_contiguous_id.values():
        assert pan.stuff_classes[i] == pan.thing_classes[i]


def test_cityscapes_metadata_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    train = sorted((x for x in labels if x.trainId not in (255, -1)), key=lambda x: x.trainId)
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_train")
    assert meta.stuff_classes == [x.name for x in train]
    expected_things = {x.id: x.trainId for x in train if x.hasInstances}
    assert meta.thing_dataset_id_to_contiguous_id == expected_things
    inst = MetadataCatalog.get("cityscapes_fine_instance_seg_train")
    assert inst.thing_classes == [x.name for x in labels if x.hasInstances and not x.ignoreInEval]


def test_ade20k_instance_table_follows_the_mapping_files():
    # the "categories" of the published ade20k_instance_imgCatIds.json (see tests/reference)
    categories = json.loads((DATASETS_DATA_DIR / "ade20k_instance_categories.json").read_text())
    lines = (DATASETS_DATA_DIR / "ade20k_instance_catid_mapping.txt").read_text().splitlines()[1:]
    rows = [line.split() for line in lines]
    to_150 = {int(r[0]): int(r[1]) - 1 for r in rows if r}
    meta = MetadataCatalog.get("ade20k_instance_train")
    assert meta.thing_classes == [c["name"] for c in categories]
    assert meta.thing_dataset_id_to_contiguous_id == {
        to_150[c["id"]]: i for i, c in enumerate(categories)
    }
    # every instance class is a thing of the 150-class panoptic table
    panoptic = MetadataCatalog.get("ade20k_panoptic_train")
    assert set(meta.thing_dataset_id_to_contiguous_id) == set(
        panoptic.thing_dataset_id_to_contiguous_id
    )


# ----------------------------------------------------------------------------- builtin names
EVALUATOR_TYPES = {
    "coco_2017_train": "coco",
    "coco_2017_val_panoptic": "coco_panoptic_seg",
    "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic_seg",
    "coco_2017_test_stuff_10k_sem_seg": "sem_seg",
    "ade20k_sem_seg_val": "sem_seg",
    "ade20k_full_sem_seg_val": "sem_seg",
    "ade20k_panoptic_val": "ade20k_panoptic_seg",
    "ade20k_instance_val": "coco",
    "cityscapes_fine_sem_seg_val": "cityscapes_sem_seg",
    "cityscapes_fine_instance_seg_val": "cityscapes_instance",
    "cityscapes_fine_panoptic_val": "cityscapes_panoptic_seg",
    "mapillary_vistas_sem_seg_val": "sem_seg",
    "mapillary_vistas_panoptic_val": "mapillary_vistas_panoptic_seg",
    "shapes_val_panoptic": "coco_panoptic_seg",
    "shapes_val_instance": "coco",
    "shapes_val_sem_seg": "sem_seg",
    "ytvis_2019_train": "ytvis",
    "ytvis_2019_val": "ytvis",
    "ytvis_2019_test": "ytvis",
    "ytvis_2021_train": "ytvis",
    "ytvis_2021_val": "ytvis",
    "ytvis_shapes_val": "ytvis",
}


def _config_dataset_names(config_dir: Path) -> set[str]:
    names = set()
    for path in sorted(config_dir.rglob("*.yaml")):
        for match in re.finditer(
            r"^\s*(?:TRAIN|TEST):\s*\(([^)]*)\)", path.read_text(), re.MULTILINE
        ):
            names.update(re.findall(r"[\"']([^\"']+)[\"']", match.group(1)))
    return names


def test_every_dataset_named_by_a_config_is_registered():
    # configs/ holds the published configs unchanged (tests/test_config.py checks their hashes)
    names = _config_dataset_names(CONFIG_DIR)
    assert len(names) >= 20
    assert {"ytvis_2019_train", "ytvis_2021_val", "ytvis_shapes_val"} <= names  # video configs
    missing = sorted(n for n in names if n not in DatasetCatalog)
    assert not missing, missing
    for name in names:
        assert MetadataCatalog.get(name).evaluator_type


def test_published_evaluator_types():
    for name, expected in EVALUATOR_TYPES.items():
        assert MetadataCatalog.get(name).evaluator_type == expected, name


def test_builtin_roots_follow_detectron2_datasets(tmp_path, monkeypatch):
    from mask2former.data.datasets import builtin

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    datasets, metadata = _fresh_builtin_catalogs(monkeypatch, builtin.datasets_root())
    assert metadata.get("coco_2017_val_panoptic").panoptic_json == str(
        tmp_path / "coco/annotations/panoptic_val2017.json"
    )
    assert list(tmp_path.iterdir()) == []  # registering reads and writes nothing
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "ADEChallengeData2016"))):
        datasets.get("ade20k_sem_seg_val")


def _fresh_builtin_catalogs(monkeypatch, root):
    """(DatasetCatalog, MetadataCatalog) of only the builtin datasets registered under ``root``."""
    from mask2former.data.catalog import _DatasetCatalog, _MetadataCatalog
    from mask2former.data.datasets import builtin

    datasets, metadata = _DatasetCatalog(), _MetadataCatalog()
    for module in (builtin, *_register_modules()):
        monkeypatch.setattr(module, "DatasetCatalog", datasets, raising=False)
        monkeypatch.setattr(module, "MetadataCatalog", metadata, raising=False)
    builtin.register_all(root)
    return datasets, metadata


def test_missing_builtin_files_point_to_the_readme_section(tmp_path, monkeypatch):
    from mask2former.data.datasets.builtin import readme_section

    datasets, _ = _fresh_builtin_catalogs(monkeypatch, str(tmp_path))
    readme = (REPO_ROOT / "datasets" / "README.md").read_text()
    sections = set(re.findall(r"^## (.+)$", readme, re.MULTILINE))
    without = {n for n in datasets if readme_section(n) is None}
    # generated, not fetched
    assert without and all(n.startswith(("shapes_", "ytvis_shapes_")) for n in without)
    for name in sorted(set(datasets) - without):
        assert readme_section(name) in sections, name
        with pytest.raises(FileNotFoundError) as info:
            datasets.get(name)
        message = str(info.value)
        assert str(tmp_path) in message.splitlines()[0], message  # the missing path comes first
        for part in ("$DETECTRON2_DATASETS", "datasets/README.md", f'"{readme_section(name)}"'):
            assert part in message, (name, message)
    assert list(tmp_path.iterdir()) == []


def _register_modules():
    from mask2former.data.datasets import coco, coco_panoptic, sem_seg, shapes, ytvis, ytvis_shapes

    return (coco, coco_panoptic, sem_seg, shapes, ytvis, ytvis_shapes)
