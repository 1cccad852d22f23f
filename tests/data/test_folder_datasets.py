"""Dataset folders: registration of each layout with builtin-style names and metadata, the
class list from dataset.yaml or the JSON files, and the errors of a folder that is wrong."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml
from PIL import Image

from mask2former.config import ConfigError, get_cfg
from mask2former.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from mask2former.data.build import check_num_classes, get_detection_dataset_dicts
from mask2former.data.datasets import DatasetFormatError, register_folder, register_folders
from mask2former.data.datasets.folder import open_folder
from mask2former.data.datasets.folder_convert import convert_semantic_folder
from mask2former.data.datasets.folder_registration import unregister_folder
from tests.data import _folder_samples as S


@pytest.fixture
def folder_name(request):
    """A dataset-folder name unique to the test; its registrations are removed afterwards."""
    roots = []
    name = "_folder_" + request.node.name.replace("[", "_").replace("]", "")
    yield name, roots.append
    for root in roots:
        unregister_folder(str(root))


def _meta_keys(name: str) -> set[str]:
    return set(MetadataCatalog.get(name).as_dict())


# ----------------------------------------------------------------------------- (a) semantic
def test_semantic_folder_registers_each_split_like_builtin_sem_seg(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data")
    cleanup(root)
    folder = register_folder(str(root), name=name)
    assert folder.split_names == ["train", "val"]
    for split, count in (("train", 3), ("val", 2)):
        for dataset in (f"{name}_{split}", f"{name}_{split}_sem_seg"):
            dicts = DatasetCatalog.get(dataset)
            assert [d["image_id"] for d in dicts] == [f"im{i}" for i in range(count)]
            assert dicts[1]["sem_seg_file_name"] == str(root / split / "labels" / "im1.png")
            meta = MetadataCatalog.get(dataset)
            assert meta.stuff_classes == S.CLASSES and meta.ignore_label == 255
            assert meta.evaluator_type == "sem_seg" and len(meta.stuff_colors) == 4
            assert meta.sem_seg_root == str(root / split / "labels")
        assert f"{name}_{split}_panoptic" not in DatasetCatalog
    assert _meta_keys(f"{name}_train") == _meta_keys("shapes_train_sem_seg")


def test_registering_a_folder_again_is_a_no_op_and_a_taken_name_an_error(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data")
    cleanup(root)
    register_folders([str(root)] * 2)  # DATASETS.FOLDERS: default_setup, then the trainer
    register_folder(str(root), name=name)
    other = S.semantic_folder(tmp_path / "other")
    with pytest.raises(KeyError, match=rf"'{name}_train' of folder .*other is already registered"):
        register_folder(str(other), name=name)
    # the builtin shapes datasets are taken too
    S.coco_panoptic_folder(tmp_path / "shapes")
    with pytest.raises(KeyError, match="'shapes_train_panoptic' of folder"):
        register_folder(str(tmp_path / "shapes"))


def test_rgb_label_pngs_are_refused_with_how_to_convert(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data", {"train": 2})
    cleanup(root)
    label = root / "train" / "labels" / "im0.png"
    Image.fromarray(np.stack([S.label_map(0)] * 3, -1)).save(label)
    register_folder(str(root), name=name)
    with pytest.raises(DatasetFormatError) as e:
        DatasetCatalog.get(f"{name}_train")
    message = str(e.value)
    assert str(label) in message and "RGB image" in message and "palette:" in message
    assert f"python tools/convert_dataset.py rgb-to-ids {root}" in message


# ----------------------------------------------------------------------------- (b) COCO instance
def test_coco_instance_folder_takes_classes_and_ids_from_the_json(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.coco_instance_folder(tmp_path / "data")
    cleanup(root)
    folder = register_folder(str(root), name=name)
    assert folder.class_names == ["car", "person"] and folder.thing_ids == [0, 1]  # id order
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.thing_classes == ["car", "person"]
    assert meta.thing_dataset_id_to_contiguous_id == {10: 0, 20: 1}
    assert meta.evaluator_type == "coco" and meta.json_file == str(root / "train/instances.json")
    assert _meta_keys(f"{name}_train") == _meta_keys("shapes_train_instance")
    dicts = DatasetCatalog.get(f"{name}_train_instance")
    assert [d["image_id"] for d in dicts] == [100, 101]
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [0, 0, 1]


# ----------------------------------------------------------------------------- (c) COCO panoptic
def test_coco_panoptic_folder_maps_json_ids_to_contiguous_ids(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.coco_panoptic_folder(tmp_path / "data")
    cleanup(root)
    folder = register_folder(str(root), name=name)
    assert folder.class_names == ["car", "road", "sky"] and folder.thing_ids == [0]
    meta = MetadataCatalog.get(f"{name}_train_panoptic")
    assert meta.thing_classes == meta.stuff_classes == ["car", "road", "sky"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0}
    assert meta.stuff_dataset_id_to_contiguous_id == {3: 0, 5: 1, 7: 2}
    assert meta.thing_colors[0] == [1, 2, 3]  # the JSON's colour
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.label_divisor == 1000
    shapes = _meta_keys("shapes_train_panoptic") - {"json_file", "sem_seg_root"}
    assert _meta_keys(f"{name}_train") == shapes
    (record,) = DatasetCatalog.get(f"{name}_train")
    assert [(s["id"], s["category_id"], s["isthing"]) for s in record["segments_info"]] == [
        (1, 2, False),
        (2, 1, False),
        (3, 0, True),
    ]


def test_dataset_yaml_that_disagrees_with_the_json_names_both(tmp_path):
    root = S.coco_panoptic_folder(tmp_path / "data")
    S.write_spec(root, classes=["car", "sky", "road"], things=["car"])
    with pytest.raises(DatasetFormatError) as e:
        open_folder(str(root))
    assert "panoptic.json: categories (in id order) ['car', 'road', 'sky']" in str(e.value)
    assert "['car', 'sky', 'road'] of" in str(e.value) and "dataset.yaml" in str(e.value)
    S.write_spec(root, classes=["car", "road", "sky"], things=["car", "road"])
    with pytest.raises(DatasetFormatError, match=r"thing categories \['car'\] differ"):
        open_folder(str(root))


# ----------------------------------------------------------------------------- (d) masks
def test_instance_mask_folder_loads_one_annotation_per_mask_png(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.masks_folder(tmp_path / "data")
    cleanup(root)
    register_folder(str(root), name=name)
    meta = MetadataCatalog.get(f"{name}_train_instance")
    assert meta.thing_classes == ["car", "person"] and meta.evaluator_type == "coco"
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert meta.json_file == str(root / "train" / "instances.json")  # masks-to-coco writes it
    dicts = DatasetCatalog.get(f"{name}_train")
    assert [(d["image_id"], d["height"], d["width"]) for d in dicts] == [(0, 16, 20), (1, 16, 20)]
    for i, record in enumerate(dicts):
        expected = S.instance_masks(i)
        annotations = record["annotations"]
        assert [a["category_id"] for a in annotations] == [0, 0, 1]
        for anno, mask in zip(annotations, expected.values()):
            np.testing.assert_array_equal(mask_util.decode(anno["segmentation"]), mask)
            assert anno["area"] == mask.sum()


def test_mask_of_an_unknown_class_is_an_error_naming_the_file(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.masks_folder(tmp_path / "data", classes=["car", "person", "sky"], things=["car"])
    cleanup(root)
    register_folder(str(root), name=name)
    assert MetadataCatalog.get(f"{name}_train").thing_classes == ["car"]
    with pytest.raises(DatasetFormatError, match=r"masks/im0/person_0\.png: .* one of \['car'\]"):
        DatasetCatalog.get(f"{name}_train")


# ----------------------------------------------------------------------------- several layouts
def test_converted_folder_registers_panoptic_first_then_instance_and_sem_seg(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data")
    cleanup(root)
    convert_semantic_folder(str(root))
    register_folder(str(root), name=name)
    panoptic = MetadataCatalog.get(f"{name}_train")
    assert panoptic.evaluator_type == "coco_panoptic_seg"
    assert panoptic.sem_seg_root == str(root / "train" / "labels")
    assert panoptic.json_file == str(root / "train" / "instances.json")
    assert _meta_keys(f"{name}_train") == _meta_keys("shapes_train_panoptic")
    assert panoptic.thing_dataset_id_to_contiguous_id == {3: 2, 4: 3}
    record = DatasetCatalog.get(f"{name}_train_panoptic")[0]
    assert record["sem_seg_file_name"] == str(root / "train" / "labels" / "im0.png")
    instance = DatasetCatalog.get(f"{name}_train_instance")[0]
    assert [a["category_id"] for a in instance["annotations"]] == [0, 0, 1]  # car, car, person
    assert MetadataCatalog.get(f"{name}_val_sem_seg").evaluator_type == "sem_seg"


# ----------------------------------------------------------------------------- dataset.yaml
@pytest.mark.parametrize(
    "spec, message",
    [
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"things": ["truck"]}, r"things \['truck'\] are not in classes"),
        ({"ignore_label": 2}, "ignore_label must be an integer in 4..65535"),
        ({"classes": ["a", "a"]}, "classes must be non-empty and unique"),
        ({"palette": {"truck": [1, 2, 3]}}, "palette names 'truck'"),
        ({"palette": {"sky": [1, 2]}}, r"a colour is \[R, G, B\]"),
    ],
)
def test_bad_dataset_yaml_is_an_error_naming_it(tmp_path, spec, message):
    root = S.semantic_folder(tmp_path / "data", {"train": 1})
    if "classes" in spec:
        spec["things"] = []
    S.write_spec(root, **spec)
    with pytest.raises(DatasetFormatError, match=message) as e:
        open_folder(str(root))
    assert "dataset.yaml" in str(e.value)


def test_folder_without_classes_or_splits_says_what_to_write(tmp_path):
    root = tmp_path / "data"
    S.write_images(root / "train", 1)
    with pytest.raises(DatasetFormatError, match="convert_dataset.py describe"):
        open_folder(str(root))
    with pytest.raises(DatasetFormatError, match="no split folder found"):
        open_folder(str(root / "train"))


def test_images_of_several_extensions_pair_with_their_labels(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data", {"train": 2})
    cleanup(root)
    image = root / "train" / "images" / "im1.jpg"
    Image.open(image).save(image.with_suffix(".PNG"))
    image.unlink()
    register_folder(str(root), name=name)
    files = [d["file_name"] for d in DatasetCatalog.get(f"{name}_train")]
    assert files == [str(root / "train/images/im0.jpg"), str(root / "train/images/im1.PNG")]


def test_write_spec_keeps_the_palette_and_lists_json_classes(tmp_path):
    from mask2former.data.datasets.folder import write_spec

    root = S.coco_panoptic_folder(tmp_path / "data")
    (root / "dataset.yaml").write_text(yaml.safe_dump({"palette": {"sky": [0, 0, 255]}}))
    folder = write_spec(str(root), ignore_label=100)
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    assert spec == {
        "classes": ["car", "road", "sky"],
        "things": ["car"],
        "ignore_label": 100,
        "palette": {"sky": [0, 0, 255]},
    }
    assert folder.classes[2].color == (0, 0, 255)


# ----------------------------------------------------------------------------- NUM_CLASSES
def test_num_classes_that_differ_from_the_dataset_are_an_error_naming_both(tmp_path, folder_name):
    name, cleanup = folder_name
    root = S.semantic_folder(tmp_path / "data")
    cleanup(root)
    register_folder(str(root), name=name)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (f"{name}_train",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133  # the COCO panoptic config's
    with pytest.raises(ConfigError) as e:
        build_detection_train_loader(cfg)
    assert f"NUM_CLASSES is 133 but dataset '{name}_train' (DATASETS.TRAIN) has 4" in str(e.value)
    assert "set MODEL.SEM_SEG_HEAD.NUM_CLASSES 4" in str(e.value)
    dicts = get_detection_dataset_dicts(f"{name}_val")
    check_num_classes(f"{name}_val", dicts, 4, "DATASETS.TEST")
    # instance data: the thing classes count
    S.masks_folder(tmp_path / "masks")
    cleanup(tmp_path / "masks")
    register_folder(str(tmp_path / "masks"), name=name + "_m")
    dicts = get_detection_dataset_dicts(f"{name}_m_train")
    check_num_classes(f"{name}_m_train", dicts, 2, "DATASETS.TRAIN")
    with pytest.raises(ConfigError, match=r"has 2 classes \(thing_classes: car, person\)"):
        check_num_classes(f"{name}_m_train", dicts, 4, "DATASETS.TRAIN")


def test_unregistered_dataset_points_to_dataset_folders():
    with pytest.raises(KeyError, match="'my_data_train' is not registered: .*DATASETS.FOLDERS"):
        get_detection_dataset_dicts("my_data_train")
