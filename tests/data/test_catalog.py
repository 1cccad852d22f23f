"""DatasetCatalog / MetadataCatalog semantics, the register helpers and BoxMode."""

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert

from mask2former.data import DatasetCatalog, Metadata, MetadataCatalog
from mask2former.data.datasets import (
    register_coco_instances,
    register_coco_panoptic,
    register_sem_seg,
)
from mask2former.structures import BoxMode


@pytest.fixture
def fresh_name(request):
    """A dataset name unique to the test, removed from both catalogs afterwards."""
    name = f"_test_{request.node.name}"
    yield name
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog:
            catalog.remove(name)


def test_registration_is_lazy_and_runs_on_every_get(fresh_name):
    calls = []
    DatasetCatalog.register(fresh_name, lambda: calls.append(1) or [{"file_name": "a"}])
    assert calls == []
    assert DatasetCatalog.get(fresh_name) == [{"file_name": "a"}]
    DatasetCatalog.get(fresh_name)
    assert len(calls) == 2


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("coco_2017_trian")
    assert "coco_2017_train" in str(e.value) and "shapes_val_panoptic" in str(e.value)


def test_double_registration_and_non_callable_are_errors(fresh_name):
    DatasetCatalog.register(fresh_name, list)
    with pytest.raises(KeyError, match="already registered"):
        DatasetCatalog.register(fresh_name, list)
    with pytest.raises(TypeError, match="expected a function"):
        DatasetCatalog.register(fresh_name + "x", [])


def test_metadata_refuses_a_conflicting_value_and_names_missing_keys():
    meta = Metadata(name="m").set(thing_classes=["a"], ignore_label=255)
    meta.set(ignore_label=255)  # same value: fine
    with pytest.raises(AssertionError, match="ignore_label"):
        meta.set(ignore_label=0)
    with pytest.raises(AttributeError, match="thing_classes"):
        meta.stuff_classes  # noqa: B018  (the message lists what is set)
    assert meta.get("stuff_classes", "dflt") == "dflt"


def _write_coco(path, categories):
    data = {
        "images": [{"id": 7, "file_name": "x.jpg", "height": 4, "width": 5}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": c["id"], "bbox": [0, 0, 2, 2], "iscrowd": 0}
            for c in categories
        ],
        "categories": categories,
    }
    path.write_text(json.dumps(data))


def test_register_coco_instances_without_metadata_takes_classes_from_file(tmp_path, fresh_name):
    (tmp_path / "x.jpg").write_bytes(b"")
    _write_coco(tmp_path / "a.json", [{"id": 40, "name": "zebra"}, {"id": 3, "name": "cat"}])
    register_coco_instances(fresh_name, {}, str(tmp_path / "a.json"), str(tmp_path))
    meta = MetadataCatalog.get(fresh_name)
    assert meta.evaluator_type == "coco" and meta.json_file == str(tmp_path / "a.json")
    (record,) = DatasetCatalog.get(fresh_name)
    assert meta.thing_classes == ["cat", "zebra"]  # numbered in id order
    assert [a["category_id"] for a in record["annotations"]] == [1, 0]


def test_register_sem_seg_sets_the_metadata_evaluators_need(tmp_path, fresh_name):
    register_sem_seg(
        fresh_name, str(tmp_path / "i"), str(tmp_path / "g"), ["a", "b"], ignore_label=7
    )
    meta = MetadataCatalog.get(fresh_name)
    assert (meta.stuff_classes, meta.ignore_label, meta.evaluator_type) == (
        ["a", "b"],
        7,
        "sem_seg",
    )
    assert meta.sem_seg_root == str(tmp_path / "g") and meta.image_root == str(tmp_path / "i")
    with pytest.raises(FileNotFoundError, match="image directory"):
        DatasetCatalog.get(fresh_name)


def test_register_coco_panoptic_needs_both_id_maps(fresh_name):
    with pytest.raises(KeyError, match="stuff_dataset_id_to_contiguous_id"):
        register_coco_panoptic(fresh_name, {"thing_dataset_id_to_contiguous_id": {}}, "i", "p", "j")


def test_boxmode_matches_torchvision():
    rng = np.random.default_rng(0)
    xywh = torch.from_numpy(rng.uniform(0, 50, (10, 4)))
    expected = box_convert(xywh, "xywh", "xyxy")
    torch.testing.assert_close(BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS), expected)
    back = BoxMode.convert(expected.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    np.testing.assert_allclose(back, xywh.numpy(), rtol=0, atol=1e-12)
    assert BoxMode.convert([1, 2, 3, 4], 1, 0) == [1.0, 2.0, 4.0, 6.0]
    assert xywh[0, 2] != expected[0, 2]  # the input was not modified in place
