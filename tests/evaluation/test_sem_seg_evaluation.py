"""SemSegEvaluator: a hand-worked confusion case, 100 on ground truth, errors, JSON dump."""

import json
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from eval_helpers import unique_name

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import SemSegEvaluator
from mask2former.evaluation.sem_seg_evaluation import confusion_matrix


@pytest.fixture()
def sem_dataset(tmp_path):
    name = unique_name("sem")
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b", "c"],
        stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    yield name
    MetadataCatalog.remove(name)


def _scores(labels: np.ndarray, num_classes: int = 3) -> torch.Tensor:
    """(C, H, W) one-hot scores whose argmax is ``labels``."""
    return (
        torch.nn.functional.one_hot(torch.from_numpy(labels), num_classes).permute(2, 0, 1).float()
    )


def _run(name, tmp_path, gt, pred, output_dir=None):
    path = str(tmp_path / "gt.png")
    cv2.imwrite(path, gt.astype(np.uint8))
    ev = SemSegEvaluator(name, distributed=False, output_dir=output_dir)
    ev.reset()
    ev.process([{"file_name": "img.jpg", "sem_seg_file_name": path}], [{"sem_seg": _scores(pred)}])
    return ev.evaluate()["sem_seg"]


def test_hand_worked_case(sem_dataset, tmp_path):
    gt = np.array([[0, 0, 1], [1, 255, 1]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    # (gt, pred) over non-ignored pixels: (0,0) (0,1) (1,1) (1,1) (1,0); the ignored one drops.
    # a: TP 1, gt 2, pred 2 -> IoU 1/3, ACC 1/2. b: TP 2, gt 3, pred 3 -> IoU 2/4, ACC 2/3.
    # c: no gt pixel -> nan, left out of the means (its prediction is on the ignored pixel).
    # mIoU = (1/3 + 1/2)/2 = 5/12; fwIoU = 2/5 * 1/3 + 3/5 * 1/2 = 13/30;
    # mACC = (1/2 + 2/3)/2 = 7/12; pACC = 3/5.
    res = _run(sem_dataset, tmp_path, gt, pred)
    assert res["mIoU"] == pytest.approx(100 * 5 / 12)
    assert res["fwIoU"] == pytest.approx(100 * 13 / 30)
    assert res["mACC"] == pytest.approx(100 * 7 / 12)
    assert res["pACC"] == pytest.approx(60.0)
    assert res["IoU-a"] == pytest.approx(100 / 3) and res["IoU-b"] == pytest.approx(50.0)
    assert res["ACC-b"] == pytest.approx(200 / 3)
    assert math.isnan(res["IoU-c"]) and math.isnan(res["ACC-c"])


def test_ground_truth_as_prediction_is_100_and_json_dump(sem_dataset, tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=(20, 30))
    res = _run(sem_dataset, tmp_path, gt, gt, output_dir=str(tmp_path / "out"))
    assert res["mIoU"] == res["fwIoU"] == res["mACC"] == res["pACC"] == pytest.approx(100.0)
    dumped = json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
    assert sorted(d["category_id"] for d in dumped) == [10, 20, 30]  # dataset ids
    for d in dumped:
        cls = {10: 0, 20: 1, 30: 2}[d["category_id"]]
        assert np.array_equal(mask_util.decode(d["segmentation"]).astype(bool), gt == cls)


def test_bad_inputs(sem_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"ground-truth labels \[7\] are outside 0..2"):
        _run(sem_dataset, tmp_path, np.array([[0, 7]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="differ in size"):
        _run(sem_dataset, tmp_path, np.array([[0, 1]]), np.array([[0, 1, 1]]))
    ev = SemSegEvaluator(sem_dataset, distributed=False)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ev.process(
            [{"file_name": "x.jpg", "sem_seg_file_name": "nope.png"}],
            [{"sem_seg": _scores(np.zeros((2, 2), dtype=np.int64))}],
        )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.int32])
@pytest.mark.parametrize("ignore_label", [255, 0, 5, 70000])
def test_confusion_matrix_equals_the_straightforward_count(dtype, ignore_label):
    """Every label dtype gives the plain count; label K counts as ignored like the ignore
    label; other labels out of range are errors."""
    rng = np.random.default_rng(0)
    k = 5
    labels = [0, 1, 2, 3, 4, k] + ([ignore_label] if ignore_label <= np.iinfo(dtype).max else [])
    gt = rng.choice(labels, size=(30, 40)).astype(dtype)
    pred = rng.integers(0, k, size=(30, 40))
    gt_col = np.where(gt.astype(np.int64) == ignore_label, k, gt.astype(np.int64))
    expected = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(expected, (pred.ravel(), gt_col.ravel()), 1)
    # uint8 with uint8: counted by mask2former._codec when it is built
    for pred_dtype in (np.int64, np.uint8):
        assert np.array_equal(
            confusion_matrix(pred.astype(pred_dtype), gt, k, ignore_label), expected
        )
        bad = gt.copy()
        bad[3, 4] = 7 if ignore_label != 7 else 8
        with pytest.raises(ValueError, match=r"labels \[[78]\] are outside 0..4"):
            confusion_matrix(pred.astype(pred_dtype), bad, k, ignore_label)
        bad_pred = pred.astype(pred_dtype)
        bad_pred[-1, -1] = k
        with pytest.raises(ValueError, match="predicted labels must lie in 0..4"):
            confusion_matrix(bad_pred, gt, k, ignore_label)


@pytest.mark.parametrize("k", [3, 255, 300])
@pytest.mark.parametrize("gt_dtype", [np.uint8, np.uint16, np.int64])
def test_confusion_matrix_of_any_label_types_and_class_counts(k, gt_dtype):
    """Predictions as uint8 (the evaluator's, K <= 256) or int64, K below and above the
    uint16 arithmetic's limit: the plain count."""
    rng = np.random.default_rng(1)
    gt = rng.integers(0, min(k + 1, np.iinfo(gt_dtype).max), size=(37, 41)).astype(gt_dtype)
    pred = rng.integers(0, k, size=gt.shape)
    expected = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(expected, (pred.ravel(), gt.astype(np.int64).ravel()), 1)
    pred_types = [np.int64, np.int32] + ([np.uint8] if k <= 256 else [])
    for pred_dtype in pred_types:
        got = confusion_matrix(pred.astype(pred_dtype), gt, k, ignore_label=-1)
        assert got.dtype == np.int64
        assert np.array_equal(got, expected), pred_dtype
