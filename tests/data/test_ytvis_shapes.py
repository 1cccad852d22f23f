"""ytvis_shapes: deterministic generation in the YouTube-VIS format, occlusion, registration."""

import filecmp
import json
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

from mask2former.data import DatasetCatalog, MetadataCatalog
from mask2former.data.datasets import load_ytvis_json, ytvis_shapes

SMALL = {"train": (4, 5), "val": (2, 6)}


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def test_generation_is_deterministic_given_the_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ytvis_shapes.generate_ytvis_shapes(str(tmp_path / name), seed=seed, splits=SMALL)
    assert _same_tree(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "train.json").read_text() != (
        tmp_path / "c" / "train.json"
    ).read_text()


def test_format_classes_and_visibility(tmp_path):
    ytvis_shapes.generate_ytvis_shapes(str(tmp_path / "d"), splits=SMALL)
    root = tmp_path / "d"
    assert (root / "VERSION").read_text().strip() == ytvis_shapes.GENERATOR_VERSION
    data = json.loads((root / "valid.json").read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert [v["length"] for v in data["videos"]] == [6, 6]
    for anno in data["annotations"]:
        assert 1 <= anno["category_id"] <= 3 and anno["iscrowd"] == 0
        for segm, box, area in zip(anno["segmentations"], anno["bboxes"], anno["areas"]):
            mask = mask_util.decode(segm)
            assert mask.shape == (ytvis_shapes.HEIGHT, ytvis_shapes.WIDTH)
            assert mask.sum() == area > 0
            assert list(mask_util.toBbox(segm)) == box
    records = load_ytvis_json(str(root / "valid.json"), str(root / "valid" / "JPEGImages"))
    assert len(records) == 2 and all(len(r["file_names"]) == 6 for r in records)
    assert all(Path(f).is_file() for r in records for f in r["file_names"])


def test_objects_move_occlude_each_other_and_stay_visible():
    rng = np.random.default_rng([0, 0])
    moved = occluded = 0
    for _ in range(30):
        _, full, visible = ytvis_shapes._objects(rng, 8)
        share = visible.sum((2, 3)) / full.sum((2, 3))
        assert share.min() >= ytvis_shapes.MIN_VISIBLE  # never hidden more than that
        occluded += bool((share < 1).any())
        moved += bool((full[:, 0] != full[:, -1]).any())
    assert moved == 30
    assert occluded >= 3, occluded  # but occlusion happens


def test_colour_identifies_the_class(tmp_path):
    ytvis_shapes.generate_ytvis_shapes(str(tmp_path / "e"), splits={"val": (3, 4)})
    root = tmp_path / "e"
    records = load_ytvis_json(str(root / "valid.json"), str(root / "valid" / "JPEGImages"))
    from PIL import Image

    for record in records:
        for file_name, annos in zip(record["file_names"], record["annotations"]):
            image = np.asarray(Image.open(file_name).convert("RGB")).astype(float)
            for anno in annos:
                mask = mask_util.decode(anno["segmentation"]).astype(bool)
                mean = image[mask].mean(0)
                color = ytvis_shapes.YTVIS_SHAPES_CATEGORIES[anno["category_id"]]["color"]
                assert np.abs(mean - color).max() < 45, (file_name, mean, color)


def test_registered_names_generate_on_first_use_quickly(tmp_path, monkeypatch):
    from tests.data.test_datasets import _fresh_builtin_catalogs

    datasets, metadata = _fresh_builtin_catalogs(monkeypatch, str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    meta = metadata.get("ytvis_shapes_val")
    assert meta.evaluator_type == "ytvis"
    assert meta.thing_classes == ["disc", "square", "triangle"]
    assert meta.json_file == str(tmp_path / "ytvis_shapes" / "valid.json")
    start = time.perf_counter()
    val = datasets.get("ytvis_shapes_val")
    assert time.perf_counter() - start < 30  # < 10 s alone; the CI machine is shared
    train = datasets.get("ytvis_shapes_train")
    assert (len(train), len(val)) == (60, 10)
    assert {r["length"] for r in train} == {8} and {r["length"] for r in val} == {12}


@pytest.mark.parametrize("name", ["ytvis_shapes_train", "ytvis_shapes_val"])
def test_builtin_names_exist(name):
    assert name in DatasetCatalog
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
