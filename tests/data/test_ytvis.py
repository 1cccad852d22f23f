"""YouTube-VIS: builtin names and layout, class tables, the loader's dicts and its errors."""

import json
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

import mask2former.data.datasets.builtin_meta as M
from mask2former.data import DatasetCatalog, MetadataCatalog
from mask2former.data.datasets import DatasetFormatError, load_ytvis_json, register_ytvis_instances
from mask2former.structures import BoxMode
from tests.published import METADATA_DIR

H, W = 12, 16


# ----------------------------------------------------------------------------- a tiny split
def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _write_split(root: Path, annotations=True) -> tuple[Path, Path]:
    """Two videos (ids 7 and 3, 3 and 2 frames) under root/JPEGImages and root/split.json.

    Video 7: track 11 (category 2) as RLE in frames 0 and 2, absent in frame 1; track 12
    (category 5) as a polygon in frame 1 and an uncompressed RLE in frame 2. Video 3: none.
    """
    image_root = root / "JPEGImages"
    videos = []
    for vid, length in ((7, 3), (3, 2)):
        (image_root / f"v{vid}").mkdir(parents=True)
        names = [f"v{vid}/{t:05d}.jpg" for t in range(length)]
        for name in names:
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image_root / name)
        videos.append({"id": vid, "file_names": names, "height": H, "width": W, "length": length})
    mask = np.zeros((H, W), bool)
    mask[2:6, 3:9] = True
    uncompressed = {"size": [H, W], "counts": [20, 5, 167]}
    data = {
        "videos": videos,
        "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    if annotations:
        data["annotations"] = [
            {
                "id": 11,
                "video_id": 7,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [_rle(mask), None, _rle(mask)],
                "bboxes": [[3, 2, 6, 4], None, [3, 2, 6, 4]],
                "areas": [24, None, 24],
            },
            {
                "id": 12,
                "video_id": 7,
                "category_id": 5,
                "segmentations": [None, [[1, 1, 5, 1, 5, 5, 1, 5], [1, 2]], uncompressed],
                "bboxes": [None, [1, 1, 4, 4], [1, 1, 1, 5]],
                "areas": [None, 16, 5],
            },
        ]
    json_file = root / "split.json"
    json_file.write_text(json.dumps(data))
    return json_file, image_root


def test_loader_gives_the_published_video_dicts(tmp_path):
    json_file, image_root = _write_split(tmp_path)
    records = load_ytvis_json(str(json_file), str(image_root))
    assert [r["video_id"] for r in records] == [3, 7]  # sorted by id
    empty, video = records
    assert empty["annotations"] == [[], []] and empty["length"] == 2
    assert video["file_names"] == [str(image_root / f"v7/{t:05d}.jpg") for t in range(3)]
    assert (video["height"], video["width"], video["length"]) == (H, W, 3)
    frames = video["annotations"]
    assert [[a["id"] for a in f] for f in frames] == [[11], [12], [11, 12]]
    first = frames[0][0]
    # categories numbered in id order: 2 -> 0, 5 -> 1
    assert first["category_id"] == 0 and frames[1][0]["category_id"] == 1
    assert first["bbox"] == [3.0, 2.0, 6.0, 4.0] and first["bbox_mode"] == BoxMode.XYWH_ABS
    assert first["iscrowd"] == 0 and frames[1][0]["iscrowd"] == 0
    assert mask_util.decode(first["segmentation"]).sum() == 24
    # the invalid 2-coordinate polygon is dropped; the uncompressed RLE is compressed
    assert frames[1][0]["segmentation"] == [[1, 1, 5, 1, 5, 5, 1, 5]]
    assert isinstance(frames[2][1]["segmentation"]["counts"], bytes)
    assert mask_util.decode(frames[2][1]["segmentation"]).sum() == 5


def test_register_sets_metadata_and_maps_through_it(tmp_path):
    json_file, image_root = _write_split(tmp_path)
    name = "_test_ytvis_registered"
    register_ytvis_instances(
        name,
        {"thing_classes": ["cat", "dog"], "thing_dataset_id_to_contiguous_id": {5: 0, 2: 1}},
        str(json_file),
        str(image_root),
    )
    try:
        meta = MetadataCatalog.get(name)
        assert (meta.evaluator_type, meta.json_file) == ("ytvis", str(json_file))
        assert meta.image_root == str(image_root)
        video = DatasetCatalog.get(name)[1]
        assert video["annotations"][0][0]["category_id"] == 1  # dataset id 2 -> 1 by the map
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_test_split_without_annotations(tmp_path):
    json_file, image_root = _write_split(tmp_path, annotations=False)
    records = load_ytvis_json(str(json_file), str(image_root))
    assert [r["annotations"] for r in records] == [[[], []], [[], [], []]]


# ----------------------------------------------------------------------------- bad inputs
def _edited(tmp_path: Path, edit) -> tuple[str, str]:
    json_file, image_root = _write_split(tmp_path)
    data = json.loads(json_file.read_text())
    edit(data)
    json_file.write_text(json.dumps(data))
    return str(json_file), str(image_root)


def _set(path: list, value):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        # segmentations longer than the video: an annotation of a frame out of range
        (
            _set(["annotations", 0, "segmentations"], [None, None, None, None]),
            "annotation 11 of video 7 has 4 segmentations for the video's 3 frames",
        ),
        (
            _set(["annotations", 1, "bboxes"], [None, None]),
            "annotation 12 of video 7 has 2 bboxes for the video's 3 frames",
        ),
        (_set(["videos", 0, "length"], 4), "video 7 has length 4 but 3 file_names"),
        (_set(["annotations", 0, "video_id"], 99), "annotation 11 refers to video 99"),
        (
            _set(["annotations", 0, "category_id"], 3),
            "annotation 11 of video 7 has category id 3, which is not in",
        ),
        (_set(["annotations", 0, "segmentations", 0, "size"], [5, 5]), "RLE of size [5, 5]"),
        (_set(["videos"], {"id": 1}), "'videos' should be a list"),
        (lambda data: data["annotations"][0].pop("bboxes"), "lacks key(s) ['bboxes']"),
        (lambda data: data.pop("categories"), "lacks key(s) ['categories']"),
    ],
)
def test_bad_json_content_names_the_file_and_what(tmp_path, edit, message):
    json_file, image_root = _edited(tmp_path, edit)
    with pytest.raises(DatasetFormatError) as info:
        load_ytvis_json(json_file, image_root)
    assert json_file in str(info.value) and message in str(info.value), str(info.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    json_file, image_root = _write_split(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.json"))):
        load_ytvis_json(str(tmp_path / "nope.json"), str(image_root))
    (tmp_path / "bad.json").write_text('{"videos": [')
    with pytest.raises(DatasetFormatError, match=re.escape(str(tmp_path / "bad.json"))):
        load_ytvis_json(str(tmp_path / "bad.json"), str(image_root))
    (image_root / "v7" / "00001.jpg").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_ytvis_json(str(json_file), str(image_root))
    assert str(image_root / "v7" / "00001.jpg") in str(info.value)
    assert str(json_file) in str(info.value)


def test_half_annotated_frames_are_skipped_with_a_warning(tmp_path, caplog):
    json_file, image_root = _edited(tmp_path, _set(["annotations", 0, "bboxes", 2], None))
    records = load_ytvis_json(json_file, image_root)
    assert [a["id"] for a in records[1]["annotations"][2]] == [12]
    assert "annotation 11 of video 7, frame 2" in caplog.text


# ----------------------------------------------------------------------------- builtin names
PUBLISHED_LAYOUT = {
    "ytvis_2019_train": ("ytvis_2019/train/JPEGImages", "ytvis_2019/train.json"),
    "ytvis_2019_val": ("ytvis_2019/valid/JPEGImages", "ytvis_2019/valid.json"),
    "ytvis_2019_test": ("ytvis_2019/test/JPEGImages", "ytvis_2019/test.json"),
    "ytvis_2021_train": ("ytvis_2021/train/JPEGImages", "ytvis_2021/train.json"),
    "ytvis_2021_val": ("ytvis_2021/valid/JPEGImages", "ytvis_2021/valid.json"),
    "ytvis_2021_test": ("ytvis_2021/test/JPEGImages", "ytvis_2021/test.json"),
}


def test_builtin_names_layout_and_tables(tmp_path, monkeypatch):
    from tests.data.test_datasets import _fresh_builtin_catalogs

    datasets, metadata = _fresh_builtin_catalogs(monkeypatch, str(tmp_path))
    assert {n for n in datasets if n.startswith("ytvis_20")} == set(PUBLISHED_LAYOUT)
    tables = {
        year: json.loads((METADATA_DIR / f"ytvis_{year}_40.json").read_text())
        for year in (2019, 2021)
    }
    for name, (image_dir, json_file) in PUBLISHED_LAYOUT.items():
        meta = metadata.get(name)
        assert meta.image_root == str(tmp_path / image_dir), name
        assert meta.json_file == str(tmp_path / json_file), name
        assert meta.evaluator_type == "ytvis"
        table = tables[int(name[6:10])]
        assert meta.thing_classes == [c["name"] for c in table]
        assert meta.thing_colors == [c["color"] for c in table]
        assert meta.thing_dataset_id_to_contiguous_id == {c["id"]: i for i, c in enumerate(table)}
    assert list(tmp_path.iterdir()) == []  # registering reads and writes nothing


def test_published_class_tables():
    for year, meta in ((2019, M.ytvis_2019_meta()), (2021, M.ytvis_2021_meta())):
        table = json.loads((METADATA_DIR / f"ytvis_{year}_40.json").read_text())
        assert M.load_table(f"ytvis_{year}_40") == table
        assert len(meta["thing_classes"]) == 40 and [c["id"] for c in table] == list(range(1, 41))
    y19, y21 = M.ytvis_2019_meta(), M.ytvis_2021_meta()
    assert y19["thing_classes"][:2] == ["person", "giant_panda"]
    assert y19["thing_colors"][0] == [220, 20, 60]
    assert y21["thing_classes"][:2] == ["airplane", "bear"] and y21["thing_classes"][25] == "person"
    assert y19["thing_classes"] != y21["thing_classes"]
