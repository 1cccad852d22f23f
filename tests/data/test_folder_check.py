"""``check_folder`` / ``tools/check_dataset.py``: class histograms of a good folder, and every
problem of a deliberately broken one named with its file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mask2former.data.datasets.folder_check import check_folder
from mask2former.data.datasets.folder_convert import convert_semantic_folder
from tests.data import _folder_samples as S

REPO = Path(__file__).resolve().parents[2]


def _check_tool():
    path = REPO / "tools" / "check_dataset.py"
    spec = importlib.util.spec_from_file_location("tools_check_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_good_folder_has_no_problems_and_counts_pixels_and_instances(tmp_path):
    root = S.semantic_folder(tmp_path / "data")
    convert_semantic_folder(str(root))
    folder, reports, problems = check_folder(str(root))
    assert problems == []
    train = reports[0]
    assert (train.name, train.num_images) == ("train", 3)
    assert train.tasks == ["panoptic", "instance", "sem_seg"]
    expected = sum(np.bincount(S.label_map(i)[S.label_map(i) < 4], minlength=4) for i in range(3))
    np.testing.assert_array_equal(train.pixels, expected)
    assert train.ignored_pixels == 3 * 3 and train.total_pixels == 3 * 16 * 20
    np.testing.assert_array_equal(train.instances, [0, 0, 6, 3])  # 2 cars, 1 person per image


def test_check_command_prints_the_histogram_and_the_overrides(tmp_path, capsys):
    tool = _check_tool()
    root = S.semantic_folder(tmp_path / "data", name="mine")
    assert tool.main(tool.parse_args([str(root)])) == 0
    out = capsys.readouterr().out
    assert "registers mine_train, mine_train_sem_seg" in out
    assert "ignore label 255: 9 pixels (0.9%)" in out
    assert "car                  thing" in out
    assert (
        f"DATASETS.FOLDERS '(\"{root}\",)' DATASETS.TRAIN '(\"mine_train\",)' "
        "DATASETS.TEST '(\"mine_val\",)' MODEL.SEM_SEG_HEAD.NUM_CLASSES 4"
    ) in out


def _break(root: Path) -> list[tuple[str, str]]:
    """Damage a converted semantic folder plus a masks/ folder; (file, what) to be reported."""
    train, val = root / "train", root / "val"
    labels = S.label_map(0)
    labels[5, 5] = 9
    Image.fromarray(labels).save(train / "labels" / "im0.png")  # unknown value
    Image.fromarray(S.label_map(1)[:10]).save(train / "labels" / "im1.png")  # wrong size
    (train / "images" / "im2.jpg").write_bytes(b"not a jpeg")  # unreadable
    Image.fromarray(S.label_map(0)).save(train / "labels" / "extra.png")  # no image
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(train / "images" / "im9.jpg")
    rgb = np.stack([S.label_map(0)] * 3, -1)
    Image.fromarray(rgb).save(val / "labels" / "im0.png")  # colour-coded
    panoptic = json.loads((val / "panoptic.json").read_text())
    panoptic["annotations"][1]["segments_info"].append(
        {"id": 99, "category_id": 1, "iscrowd": 0, "area": 1}
    )
    (val / "panoptic.json").write_text(json.dumps(panoptic))
    masks = val / "masks" / "im1"
    masks.mkdir(parents=True)
    Image.fromarray((S.label_map(1) == 2).astype(np.uint8)).save(masks / "truck_0.png")
    Image.fromarray(S.label_map(1)).save(masks / "car_0.png")  # not binary
    Image.fromarray(np.ones((4, 4), np.uint8)).save(masks / "person_0.png")  # wrong size
    (val / "masks" / "ghost").mkdir()
    Image.fromarray(np.ones((16, 20), np.uint8)).save(val / "masks" / "ghost" / "car_0.png")
    return [
        ("train/labels/im0.png", "label values [9] are neither class ids 0..3 nor the ignore"),
        (
            "train/labels/im1.png",
            "label map is 20x10 (width x height) but its image im1.jpg is 20x16",
        ),
        ("train/images/im2.jpg", "cannot read the image"),
        ("train/labels/extra.png", "label PNG without an image"),
        ("train/images/im9.jpg", "no label PNG"),
        ("val/labels/im0.png", "RGB image, but a label PNG must hold one class id per pixel"),
        ("val/panoptic/im1.png", "segments_info ids [99] have no pixels"),
        ("val/masks/im1/truck_0.png", "<class> one of ['car', 'person']"),
        ("val/masks/im1/car_0.png", "not a binary mask"),
        ("val/masks/im1/person_0.png", "mask is 4x4 (width x height) but its image"),
        ("val/masks/ghost", "mask folder without an image of the same name"),
    ]


def test_broken_folder_names_each_problem_with_its_file(tmp_path, capsys):
    root = S.semantic_folder(tmp_path / "data")
    convert_semantic_folder(str(root))
    expected = _break(root)
    _, _, problems = check_folder(str(root))
    found = [(p.path, p.what) for p in problems]
    for path, what in expected:
        assert any(
            p == str(root / path) and what in w for p, w in found
        ), f"{path}: {what!r} not in\n" + "\n".join(map(str, problems))
    assert len(problems) == len(expected)  # and nothing else
    tool = _check_tool()
    assert tool.main(tool.parse_args([str(root)])) == 1
    out = capsys.readouterr().out
    assert f"{len(expected)} problem(s):" in out
    assert f"\n  {root}/train/labels/im0.png: label values [9]" in out
    assert "Train with" not in out


def test_folder_that_cannot_be_opened_is_one_problem(tmp_path, capsys):
    root = tmp_path / "data"
    S.write_images(root / "train", 1)
    folder, reports, problems = check_folder(str(root))
    assert folder is None and reports == []
    assert len(problems) == 1 and "no classes: write" in problems[0].what
    tool = _check_tool()
    assert tool.main(tool.parse_args([str(root)])) == 1
    assert "convert_dataset.py describe" in capsys.readouterr().out


def test_overrides_of_an_instance_folder_read_rle_masks(tmp_path, capsys):
    tool = _check_tool()
    root = S.masks_folder(tmp_path / "data")
    assert tool.main(tool.parse_args([str(root), "--test-split", "train"])) == 0
    out = capsys.readouterr().out
    assert "NUM_CLASSES 2 INPUT.MASK_FORMAT bitmask" in out
    assert "car                  thing            -       -         4" in out  # 2 per image
    assert "instance evaluation reads" in out and "masks-to-coco" in out
