"""The synthetic shapes dataset: deterministic, self-consistent, safe to generate concurrently."""

import filecmp
import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mask2former.data import DatasetCatalog, MetadataCatalog
from mask2former.data.datasets import shapes
from mask2former.data.datasets.coco import load_coco_json
from mask2former.data.datasets.coco_panoptic import load_coco_panoptic_json

SMALL = {"train": 12, "val": 4}


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    shapes.ensure_shapes_dataset(str(root))
    return root / "shapes"


def test_generation_is_deterministic(tmp_path):
    shapes.generate_shapes(str(tmp_path / "a"), splits=SMALL)
    shapes.generate_shapes(str(tmp_path / "b"), splits=SMALL)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(a) == 3 * sum(SMALL.values()) + 4 + 1  # images, 2 PNGs each, 4 JSON, VERSION
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_prefix_of_the_full_dataset_is_the_small_one(tmp_path, full_root):
    """Each split has its own seeded stream: a smaller split is a prefix of the full one."""
    shapes.generate_shapes(str(tmp_path / "s"), splits=SMALL)
    for stem in ("train/000011.jpg", "panoptic_val/000003.png", "panoptic_semseg_train/000005.png"):
        assert filecmp.cmp(tmp_path / "s" / stem, full_root / stem, shallow=False), stem


def _ids(path: str) -> np.ndarray:
    png = np.asarray(Image.open(path), dtype=np.int64)
    return png[..., 0] + 256 * png[..., 1] + 256**2 * png[..., 2]


def test_panoptic_png_ids_decode_to_segments_info(full_root):
    meta = shapes.shapes_meta()
    records = load_coco_panoptic_json(
        str(full_root / "annotations/panoptic_val.json"),
        str(full_root / "val"),
        str(full_root / "panoptic_val"),
        meta,
        str(full_root / "panoptic_semseg_val"),
    )
    assert len(records) == shapes.SPLITS["val"]
    for rec in records:
        ids = _ids(rec["pan_seg_file_name"])
        semantic = np.asarray(Image.open(rec["sem_seg_file_name"]))
        assert sorted(np.unique(ids)) == sorted(s["id"] for s in rec["segments_info"])
        for seg in rec["segments_info"]:
            mask = ids == seg["id"]
            assert seg["area"] == mask.sum()
            assert (semantic[mask] == seg["category_id"]).all()  # semantic PNG agrees
            assert seg["isthing"] == (
                seg["category_id"] in meta["thing_dataset_id_to_contiguous_id"].values()
            )
        assert any(s["isthing"] for s in rec["segments_info"])


def test_instance_masks_equal_the_panoptic_things(full_root):
    coco = COCO(str(full_root / "annotations/instances_val.json"))
    records = load_coco_panoptic_json(
        str(full_root / "annotations/panoptic_val.json"),
        str(full_root / "val"),
        str(full_root / "panoptic_val"),
        shapes.shapes_meta(),
    )
    for rec in records[:10]:
        ids = _ids(rec["pan_seg_file_name"])
        thing_masks = sorted(
            (ids == s["id"]).tobytes() for s in rec["segments_info"] if s["isthing"]
        )
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[rec["image_id"]]))
        assert sorted(coco.annToMask(a).astype(bool).tobytes() for a in anns) == thing_masks


def test_classes_are_balanced_and_images_match_their_records(full_root):
    records = load_coco_json(
        str(full_root / "annotations/instances_train.json"), str(full_root / "train")
    )
    counts = Counter(a["category_id"] for r in records for a in r["annotations"])
    total = sum(counts.values())
    assert sorted(counts) == [0, 1, 2] and min(counts.values()) > 0.25 * total
    image = Image.open(records[0]["file_name"])
    assert image.mode == "RGB" and image.size == (records[0]["width"], records[0]["height"])


def test_registered_names_generate_on_first_use(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(shapes, "SPLITS", SMALL)
    names = [f"_t_shapes_{k}" for k in range(8)]
    try:
        monkeypatch.setattr(
            shapes,
            "_register",
            lambda name, func, fields: _register_renamed(names, name, func, fields),
        )
        shapes.register_shapes(str(root))
        assert not root.exists()  # registering writes nothing
        got = {MetadataCatalog.get(n).get("_orig"): n for n in names}
        pan = DatasetCatalog.get(got["shapes_val_panoptic_with_sem_seg"])
        assert len(pan) == SMALL["val"] and "sem_seg_file_name" in pan[0]
        assert (root / "shapes" / "VERSION").read_text().strip() == shapes.GENERATOR_VERSION
        assert len(DatasetCatalog.get(got["shapes_train_sem_seg"])) == SMALL["train"]
        assert MetadataCatalog.get(got["shapes_train_instance"]).thing_classes == [
            "disc",
            "square",
            "triangle",
        ]
    finally:
        for n in names:
            DatasetCatalog.pop(n, None)
            MetadataCatalog.pop(n, None)


def _register_renamed(names, name, func, fields):
    """Register under the next free test name, remembering the real one (keeps catalogs clean)."""
    test_name = next(n for n in names if n not in DatasetCatalog)
    DatasetCatalog.register(test_name, func)
    MetadataCatalog.get(test_name).set(_orig=name, **fields)


def test_builtin_shapes_metadata():
    meta = MetadataCatalog.get("shapes_train_panoptic_with_sem_seg")
    assert meta.stuff_classes == ["disc", "square", "triangle", "water", "grass", "sand"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert meta.panoptic_json.endswith(os.path.join("shapes", "annotations", "panoptic_train.json"))


def test_stale_directory_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "SPLITS", SMALL)
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "VERSION").write_text("0\n")
    shapes.ensure_shapes_dataset(str(tmp_path))
    assert (tmp_path / "shapes" / "VERSION").read_text().strip() == shapes.GENERATOR_VERSION
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert (
        leftovers[0] == "shapes"
        and leftovers[1].startswith("shapes.stale-")
        and len(leftovers) == 2
    )


def test_losing_the_race_uses_the_winner(tmp_path, monkeypatch):
    """Another process renames its copy into place while this one generates: use that copy."""
    real_generate = shapes.generate_shapes

    def generate_while_another_process_wins(out_dir, seed=0, splits=None):
        real_generate(str(tmp_path / "shapes"), seed, SMALL)  # the winner
        (tmp_path / "shapes" / "winner").write_text("")
        real_generate(out_dir, seed, SMALL)

    monkeypatch.setattr(shapes, "generate_shapes", generate_while_another_process_wins)
    assert shapes.ensure_shapes_dataset(str(tmp_path)) == str(tmp_path / "shapes")
    assert (tmp_path / "shapes" / "winner").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # our temporary copy is gone


def _ensure(root: str) -> str:
    shapes.SPLITS = SMALL
    return shapes.ensure_shapes_dataset(root)


@pytest.mark.slow
def test_concurrent_first_use(tmp_path):
    with mp.get_context("fork").Pool(3) as pool:
        results = pool.map(_ensure, [str(tmp_path)] * 3)
    assert results == [str(tmp_path / "shapes")] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temporary dirs left
    assert (tmp_path / "shapes" / "VERSION").read_text().strip() == shapes.GENERATOR_VERSION
