"""COCOEvaluator: 100 AP on ground truth, equality with pycocotools' own COCOeval."""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import COCOEvaluator
from mask2former.evaluation.coco_evaluation import (
    instances_to_coco_json,
    load_segm_results,
    mask_areas,
)
from mask2former.structures import Instances


def _outputs(masks, classes, scores):
    inst = Instances(masks.shape[1:])
    inst.pred_masks = torch.from_numpy(masks)
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
    return {"instances": inst}


def _run(name, predictions, output_dir=None):
    evaluator = COCOEvaluator(name, distributed=False, output_dir=output_dir)
    evaluator.reset()
    for image_id, (masks, classes, scores) in predictions.items():
        evaluator.process([{"image_id": image_id}], [_outputs(masks, classes, scores)])
    return evaluator.evaluate()["segm"]


def _perturbed(gt, seed=0):
    """Shifted gt masks, some class flips, some spurious masks, random scores."""
    rng = np.random.default_rng(seed)
    preds = {}
    for image_id, (masks, classes) in gt.items():
        shifted = np.roll(masks, shift=tuple(rng.integers(-4, 5, size=2)), axis=(1, 2))
        extra = rng.random((2,) + masks.shape[1:]) < 0.3
        classes = np.where(rng.random(len(classes)) < 0.2, 1 - classes, classes)
        preds[image_id] = (
            np.concatenate([shifted, extra]),
            np.concatenate([classes, [0, 1]]),
            rng.random(len(classes) + 2),
        )
    return preds


def test_ground_truth_as_predictions_gives_100(coco_instance_dataset):
    name, gt = coco_instance_dataset
    res = _run(name, {i: (m, c, np.ones(len(c))) for i, (m, c) in gt.items()})
    for metric in ("AP", "AP50", "AP75", "AP-cat_a", "AP-cat_b"):
        assert res[metric] == pytest.approx(100.0)


def test_ap_equals_pycocotools_cocoeval_on_the_dumped_json(coco_instance_dataset, tmp_path):
    name, gt = coco_instance_dataset
    res = _run(name, _perturbed(gt), output_dir=str(tmp_path))
    json_file = MetadataCatalog.get(name).json_file
    results_file = tmp_path / "coco_instances_results.json"
    assert {r["category_id"] for r in json.loads(results_file.read_text())} == {5, 9}

    def cocoeval(cat_ids=None):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(json_file)
            ev = COCOeval(coco_gt, coco_gt.loadRes(str(results_file)), "segm")
            if cat_ids:
                ev.params.catIds = cat_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev.stats

    stats = cocoeval()
    for i, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        expected = stats[i] * 100 if stats[i] >= 0 else float("nan")
        assert res[metric] == pytest.approx(expected, abs=1e-9, nan_ok=True), metric
    assert 10 < res["AP"] < 90  # neither trivial nor perfect
    # Per-category AP = COCOeval restricted to that category (area all, 100 detections).
    for cat_id, cls_name in ((5, "cat_a"), (9, "cat_b")):
        assert res[f"AP-{cls_name}"] == pytest.approx(cocoeval([cat_id])[0] * 100, abs=1e-9)


def test_no_predictions_gives_nan_and_bad_class_is_an_error(coco_instance_dataset):
    name, gt = coco_instance_dataset
    empty = np.zeros((0, 128, 160), dtype=bool)
    res = _run(name, {1: (empty, [], [])})
    assert math.isnan(res["AP"])
    masks, classes = gt[1]
    with pytest.raises(KeyError, match=r"predicted class 7 is not a thing class .*\[0, 1\]"):
        _run(name, {1: (masks, np.full(len(classes), 7), np.ones(len(classes)))})


def test_load_segm_results_equals_pycocotools_load_res_less_bbox(coco_instance_dataset):
    name, gt = coco_instance_dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(MetadataCatalog.get(name).json_file)
    results = []
    for image_id, (masks, classes, scores) in _perturbed(gt).items():
        inst = _outputs(masks, classes, scores)["instances"]
        results += [
            r | {"category_id": [5, 9][r["category_id"]]}
            for r in instances_to_coco_json(inst, image_id)
        ]
    results[0]["bbox"] = [0.0, 0.0, 1.0, 1.0]  # dropped
    before = copy.deepcopy(results)
    ours = load_segm_results(coco_gt, results)
    assert results == before  # not modified
    with contextlib.redirect_stdout(io.StringIO()):
        ref = coco_gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results])
    assert len(ours.dataset["annotations"]) == len(ref.dataset["annotations"]) > 10
    for a, b in zip(ours.dataset["annotations"], ref.dataset["annotations"]):
        del b["bbox"]  # not made: COCOeval "segm" does not read it
        assert list(a) == list(b)  # same keys in the same order
        for key in a:
            assert type(a[key]) is type(b[key]) and np.array_equal(a[key], b[key]), key
    for key in ("images", "categories", "info"):
        assert ours.dataset[key] == ref.dataset[key]
    assert ours.imgToAnns.keys() == ref.imgToAnns.keys() and ours.anns.keys() == ref.anns.keys()
    with pytest.raises(ValueError, match="not in the ground truth"):
        load_segm_results(coco_gt, [results[0] | {"image_id": 99}])
    with pytest.raises(KeyError, match="no 'segmentation'"):
        load_segm_results(coco_gt, [{"image_id": 1, "category_id": 5, "score": 1.0}])


def test_mask_areas_of_more_than_255_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((20, 24, 600)) < rng.random(600)
    rles = mask_util.encode(np.asfortranarray(masks.astype(np.uint8)))
    areas = mask_areas(rles)
    assert areas.dtype == np.uint32 and areas.tolist() == masks.sum(axis=(0, 1)).tolist()
    assert mask_areas([]).shape == (0,)
