"""PQ of semantic predictions (the evaluate_pq_for_semantic_segmentation tool's library)."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from eval_helpers import unique_name

from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.evaluation import SemSegEvaluator
from mask2former.evaluation.semantic_pq import semantic_pq


@pytest.fixture()
def dataset(tmp_path):
    """Two images: a random 12x16 label map and the 1x10 hand-worked row."""
    rng = np.random.default_rng(0)
    labels = {"a": rng.integers(0, 3, size=(12, 16)), "b": np.array([[0] * 6 + [1] * 3 + [255]])}
    records = []
    for stem, lab in labels.items():
        path = str(tmp_path / f"{stem}.png")
        cv2.imwrite(path, lab.astype(np.uint8))
        records.append({"file_name": f"/img/{stem}.jpg", "sem_seg_file_name": path})
    name = unique_name("sempq")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=["x", "y", "z"],
        ignore_label=255,
        stuff_dataset_id_to_contiguous_id={3: 0, 5: 1, 7: 2},
    )
    yield name, records, labels
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _predictions(name, records, preds, out_dir):
    """sem_seg_predictions.json written by SemSegEvaluator for the given label maps."""
    ev = SemSegEvaluator(name, distributed=False, output_dir=str(out_dir))
    ev.reset()
    for rec in records:
        pred = torch.from_numpy(preds[Path(rec["file_name"]).stem])
        scores = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()
        ev.process([rec], [{"sem_seg": scores}])
    ev.evaluate()
    return out_dir / "sem_seg_predictions.json"


def test_ground_truth_as_prediction_is_100(dataset, tmp_path):
    name, records, labels = dataset
    preds = {k: np.where(v == 255, 0, v) for k, v in labels.items()}
    with open(_predictions(name, records, preds, tmp_path)) as f:
        res = semantic_pq(name, json.load(f))
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["panoptic_seg"]["RQ"] == pytest.approx(100.0)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_hand_worked_row(dataset, tmp_path):
    name, records, labels = dataset
    # gt: class x px 0-5, class y px 6-8, VOID px 9. pred: x px 0-3, y px 4-9.
    # x: 4 / (4 + 6 - 4) = 2/3. y: 3 / (6 + 3 - 3 - 1 on VOID) = 3/5. Both TP:
    # PQ = SQ = (2/3 + 3/5) / 2 = 19/30, RQ = 1. mIoU: x 4/6, y 3/5 (the VOID pixel dropped).
    preds = {"b": np.array([[0] * 4 + [1] * 6])}
    with open(_predictions(name, records[1:], preds, tmp_path)) as f:
        res = semantic_pq(name, json.load(f))
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100 * 19 / 30)
    assert res["panoptic_seg"]["SQ"] == pytest.approx(100 * 19 / 30)
    assert res["panoptic_seg"]["RQ"] == pytest.approx(100.0)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100 * 19 / 30)


def test_errors(dataset):
    name, _, _ = dataset
    with pytest.raises(KeyError, match="'nope', which is not an image"):
        semantic_pq(name, [{"file_name": "nope.jpg", "category_id": 3, "segmentation": {}}])


def test_tool_runs_on_the_library(tmp_path):
    tool = (
        Path(__file__).resolve().parents[2] / "tools" / "evaluate_pq_for_semantic_segmentation.py"
    )
    out = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--json-file" in out.stdout
