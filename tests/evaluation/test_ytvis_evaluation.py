"""YouTube-VIS video AP (hand-worked cases, COCOeval on one-frame videos) and YTVISEvaluator."""

import contextlib
import io
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from eval_helpers import random_instances, unique_name
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.config import get_cfg
from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import YTVISEvaluator, build_evaluator
from mask2former.evaluation.video_ap import Track, evaluate_video_ap, track_iou

H, W = 6, 10


def rle(mask: np.ndarray) -> dict:
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def row_mask(row: int, start: int, stop: int, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[row, start:stop] = True
    return mask


def track(frames, category=1, score=1.0, video=1, **kwargs) -> Track:
    """A track from per-frame masks (None where absent)."""
    return Track(video, category, [None if m is None else rle(m) for m in frames], score, **kwargs)


# ----------------------------------------------------------------------------- IoU and area
def test_video_iou_sums_intersections_and_unions_over_frames():
    empty = np.zeros((H, W), bool)
    gt = track([row_mask(0, 0, 4), None, row_mask(0, 0, 4), None, None])
    pred = track([row_mask(0, 0, 4), row_mask(1, 0, 2), row_mask(0, 2, 4), None, empty])
    # intersections 4 + 0 + 2, unions 4 + 2 + 4; frames 3 (both absent), 4 (empty) add nothing
    assert track_iou([pred], [gt])[0, 0] == pytest.approx(0.6, abs=1e-12)
    other = track([None, None, None, row_mask(2, 0, 3), None])
    assert track_iou([pred, other], [gt]).tolist() == [[0.6], [0.0]]
    nothing = track([None, None, None, None, empty])
    assert track_iou([nothing], [nothing]).tolist() == [[0.0]]  # empty union: IoU 0
    assert track_iou([], [gt]).shape == (0, 1) and track_iou([pred], []).shape == (1, 0)


def test_track_area_is_the_mean_over_frames_where_the_object_is():
    pred = track([row_mask(0, 0, 4), None, row_mask(0, 0, 8), np.zeros((H, W), bool)])
    assert pred.average_area == 6.0  # (4 + 8) / 2: absent and empty frames left out
    gt = track([row_mask(0, 0, 4), None], areas=[100.0, None])
    assert gt.average_area == 100.0  # a ground truth's "areas" decide
    assert track([None, None]).average_area == 0.0


# ----------------------------------------------------------------------------- hand-worked AP
def _two_gt_three_predictions():
    """Two 2-frame ground truths; predictions of IoU 0.8 (score .9), 0.6 (.8) and 0 (.7)."""
    gt1 = track([row_mask(0, 0, 5), row_mask(0, 5, 10)])
    gt2 = track([row_mask(2, 0, 5), row_mask(2, 5, 10)])
    a = track([row_mask(0, 0, 5), row_mask(0, 5, 8)], score=0.9)  # 8 / 10
    b = track([row_mask(2, 0, 3), row_mask(2, 5, 8)], score=0.8)  # 6 / 10
    c = track([row_mask(4, 0, 5), None], score=0.7)
    return [gt1, gt2], [a, b, c]


def test_hand_worked_ap_and_ar():
    gts, preds = _two_gt_three_predictions()
    metrics = evaluate_video_ap(gts, preds, [1], [1]).summary()
    # IoU thresholds .50-.60: both found, AP 1; .65-.80: one of two at precision 1, so the 51
    # recall points 0, .01, ..., .50 have precision 1: AP 51/101; .85-.95: nothing
    expected_ap = (3 * 1 + 4 * 51 / 101) / 10
    assert metrics["AP"] == pytest.approx(100 * expected_ap, abs=1e-9)
    assert metrics["AP50"] == pytest.approx(100, abs=1e-9)
    assert metrics["AP75"] == pytest.approx(100 * 51 / 101, abs=1e-9)
    assert metrics["AR10"] == pytest.approx(100 * (3 * 1 + 4 * 0.5) / 10, abs=1e-9)
    # one prediction per video: only A (IoU .8) is kept
    assert metrics["AR1"] == pytest.approx(100 * 7 * 0.5 / 10, abs=1e-9)
    assert metrics["APs"] == metrics["AP"]  # every track is small (< 128^2 pixels)
    assert np.isnan(metrics["APm"]) and np.isnan(metrics["APl"])


def test_categories_and_videos_are_kept_apart():
    gts, preds = _two_gt_three_predictions()
    # the same predictions in another category, or in another video, find nothing
    wrong_class = [Track(p.video_id, 2, p.rles, p.score) for p in preds]
    result = evaluate_video_ap(gts, wrong_class, [1], [1, 2])
    assert result.summary()["AP"] == 0.0
    assert np.isnan(result.per_category_ap()[2])  # no ground truth of category 2
    wrong_video = [Track(2, 1, p.rles, p.score) for p in preds]
    assert evaluate_video_ap(gts, wrong_video, [1, 2], [1]).summary()["AP"] == 0.0


def test_crowd_ground_truth_is_ignored_and_absorbs_predictions():
    gts, preds = _two_gt_three_predictions()
    crowd = track([row_mask(4, 0, 5), None], iscrowd=True)  # where prediction C is
    with_crowd = evaluate_video_ap([*gts, crowd], preds, [1], [1]).summary()
    # C now matches the crowd region: ignored, no longer a false positive (it came last
    # anyway, so AP is unchanged); the crowd region is not a ground truth to find
    assert with_crowd["AR10"] == pytest.approx(50.0)
    lone = evaluate_video_ap([crowd], preds[2:], [1], [1]).summary()
    assert np.isnan(lone["AP"])  # nothing counts as ground truth


def test_area_ranges_use_the_average_area():
    size = (140, 140)
    big = np.zeros(size, bool)
    big[:130, :130] = True  # 16900 pixels: medium (128^2 = 16384 .. 256^2)
    small = np.zeros(size, bool)
    small[:10, :10] = True
    # the ground truth is medium on average although small in one frame:
    # areas 16900 and 16900 ... and absent in the third: mean 16900
    gt = Track(1, 1, [rle(big), rle(big), None], areas=[16900.0, 16900.0, None])
    pred = Track(1, 1, [rle(big), rle(big), rle(np.zeros(size, bool))], 0.5)
    metrics = evaluate_video_ap([gt], [pred], [1], [1]).summary()
    assert metrics["APm"] == pytest.approx(100.0) and np.isnan(metrics["APs"])
    gt_small = Track(1, 1, [rle(small), None, None], areas=[100.0, None, None])
    metrics = evaluate_video_ap([gt_small], [pred], [1], [1]).summary()
    # the prediction is medium and unmatched: outside the small range it is ignored there
    assert metrics["APs"] == 0.0 and np.isnan(metrics["APm"])


# ----------------------------------------------------------------------------- vs COCOeval
def _one_frame_videos(seed: int = 0, num_videos: int = 6):
    """Ground truths and predictions (perturbed, shuffled scores, some wrong classes)."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for video in range(1, num_videos + 1):
        masks, classes = random_instances(rng, 48, 64, int(rng.integers(1, 6)))
        for mask, cls in zip(masks, classes):
            gts.append(Track(video, int(cls) + 1, [rle(mask)], areas=[float(mask.sum())]))
            for _ in range(int(rng.integers(0, 3))):
                noisy = mask ^ (rng.random(mask.shape) < rng.uniform(0, 0.08))
                label = int(cls) + 1 if rng.random() < 0.8 else 2 - int(cls)
                preds.append(Track(video, label, [rle(noisy)], float(rng.random())))
        extra, extra_classes = random_instances(rng, 48, 64, 2)
        for mask, cls in zip(extra, extra_classes):
            preds.append(Track(video, int(cls) + 1, [rle(mask)], float(rng.random())))
    return gts, preds


def _cocoeval(gts, preds, num_videos):
    images = [{"id": v, "height": 48, "width": 64} for v in range(1, num_videos + 1)]
    annotations = [
        {
            "id": k + 1,
            "image_id": g.video_id,
            "category_id": g.category_id,
            "segmentation": {"size": g.rles[0]["size"], "counts": g.rles[0]["counts"].decode()},
            "area": g.areas[0],
            "bbox": list(mask_util.toBbox(g.rles[0])),
            "iscrowd": 0,
        }
        for k, g in enumerate(gts)
    ]
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    results = [
        {
            "image_id": p.video_id,
            "category_id": p.category_id,
            "segmentation": {"size": p.rles[0]["size"], "counts": p.rles[0]["counts"].decode()},
            "score": p.score,
        }
        for p in preds
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(results), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_frame_videos_score_as_cocoeval(seed):
    gts, preds = _one_frame_videos(seed)
    result = evaluate_video_ap(gts, preds, list(range(1, 7)), [1, 2])
    coco = _cocoeval(gts, preds, 6)
    # area "all" (the other ranges differ by design: 128^2 / 256^2 instead of 32^2 / 96^2)
    np.testing.assert_allclose(
        result.precision[..., 0, :], coco.eval["precision"][..., 0, :], atol=1e-12
    )
    np.testing.assert_allclose(result.recall[..., 0, :], coco.eval["recall"][..., 0, :], atol=1e-12)
    metrics = result.summary()
    for name, index in (("AP", 0), ("AP50", 1), ("AP75", 2), ("AR1", 6), ("AR10", 7)):
        assert metrics[name] == pytest.approx(100 * coco.stats[index], abs=1e-9), name
    assert 10 < metrics["AP"] < 90, metrics  # neither trivial nor perfect


# ----------------------------------------------------------------------------- the evaluator
@pytest.fixture()
def ytvis_dataset(tmp_path):
    """A registered 2-video YouTube-VIS JSON (category ids 4 and 7, 3 and 2 frames)."""
    mask = row_mask(1, 2, 8)
    second = row_mask(3, 0, 4)
    videos = [
        {
            "id": 10,
            "file_names": ["a/0.jpg", "a/1.jpg", "a/2.jpg"],
            "height": H,
            "width": W,
            "length": 3,
        },
        {"id": 20, "file_names": ["b/0.jpg", "b/1.jpg"], "height": H, "width": W, "length": 2},
    ]
    to_json = lambda m: {**rle(m), "counts": rle(m)["counts"].decode()}  # noqa: E731
    annotations = [
        {
            "id": 1,
            "video_id": 10,
            "category_id": 7,
            "iscrowd": 0,
            "segmentations": [to_json(mask), None, to_json(mask)],
            "bboxes": [[2, 1, 6, 1], None, [2, 1, 6, 1]],
            "areas": [6, None, 6],
        },
        {
            "id": 2,
            "video_id": 20,
            "category_id": 4,
            "iscrowd": 0,
            "segmentations": [[[0, 3, 4, 3, 4, 4, 0, 4]], to_json(second)],
            "bboxes": [[0, 3, 4, 1], [0, 3, 4, 1]],
            "areas": [4, 4],
        },
    ]
    categories = [{"id": 4, "name": "cat"}, {"id": 7, "name": "dog"}]
    files = {}
    for name, data in (
        ("gt", {"videos": videos, "annotations": annotations, "categories": categories}),
        ("test", {"videos": videos, "categories": categories}),
    ):
        json_file = tmp_path / f"{name}.json"
        json_file.write_text(json.dumps(data))
        files[name] = unique_name("ytvis")
        MetadataCatalog.get(files[name]).set(
            json_file=str(json_file),
            evaluator_type="ytvis",
            thing_classes=["cat", "dog"],
            thing_dataset_id_to_contiguous_id={4: 0, 7: 1},
        )
    yield files, {10: (1, mask), 20: (0, second)}
    for name in files.values():
        MetadataCatalog.remove(name)


def _inputs(video_id, length):
    return [{"video_id": video_id, "length": length, "height": H, "width": W}]


def _perfect_outputs(truth):
    """Per video the ground truth as a prediction, and a wrong second guess."""
    outputs = {}
    for video_id, (label, mask) in truth.items():
        length = 3 if video_id == 10 else 2
        frames = np.stack([mask] * length)
        if video_id == 10:
            frames[1] = False  # absent in the middle frame
        outputs[video_id] = {
            "image_size": (H, W),
            "pred_scores": [0.9, 0.2],
            "pred_labels": [label, 1 - label],
            # a (T, H, W) tensor for the first, a list of per-frame (H, W) masks for the second
            "pred_masks": [torch.from_numpy(frames), [np.ones((H, W), bool)] * length],
        }
    return outputs


def test_ground_truth_fed_back_scores_100_and_writes_results_json(ytvis_dataset, tmp_path):
    files, truth = ytvis_dataset
    out_dir = tmp_path / "inference"
    evaluator = build_evaluator(get_cfg(), files["gt"], str(out_dir))
    assert isinstance(evaluator, YTVISEvaluator)
    evaluator.reset()
    outputs = _perfect_outputs(truth)
    evaluator.process(_inputs(10, 3), outputs[10])  # the published model's single dict
    evaluator.process(_inputs(20, 2), [outputs[20]])
    metrics = evaluator.evaluate()["segm"]
    assert metrics["AP"] == pytest.approx(100.0) and metrics["AR1"] == pytest.approx(100.0)
    assert metrics["AP-cat"] == pytest.approx(100.0) and metrics["AP-dog"] == pytest.approx(100.0)
    assert os.listdir(out_dir) == ["results.json"]  # written whole (no temporary left)
    results = json.loads((out_dir / "results.json").read_text())
    assert len(results) == 4
    first = results[0]
    assert set(first) == {"video_id", "score", "category_id", "segmentations"}
    assert (first["video_id"], first["score"], first["category_id"]) == (10, 0.9, 7)
    assert len(first["segmentations"]) == 3
    decoded = [mask_util.decode(s) for s in first["segmentations"]]
    assert [int(d.sum()) for d in decoded] == [6, 0, 6]
    assert all(isinstance(s["counts"], str) and s["size"] == [H, W] for s in first["segmentations"])
    assert [r["category_id"] for r in results] == [7, 4, 4, 7]  # dataset ids


def test_published_call_and_tasks(ytvis_dataset, tmp_path):
    files, _ = ytvis_dataset
    # train_net_video.py: YTVISEvaluator(dataset_name, cfg, True, output_folder)
    evaluator = YTVISEvaluator(files["gt"], get_cfg(), True, str(tmp_path))
    assert evaluator._output_dir == str(tmp_path) and evaluator._distributed is True
    YTVISEvaluator(files["gt"], ("segm",))
    with pytest.raises(ValueError, match="tasks"):
        YTVISEvaluator(files["gt"], ("bbox",))


def test_test_split_only_writes_results_json(ytvis_dataset, tmp_path):
    files, truth = ytvis_dataset
    evaluator = YTVISEvaluator(files["test"], distributed=False, output_dir=str(tmp_path / "o"))
    evaluator.reset()
    outputs = _perfect_outputs(truth)
    evaluator.process(_inputs(10, 3), outputs[10])
    assert evaluator.evaluate() == {}
    assert len(json.loads((tmp_path / "o" / "results.json").read_text())) == 2


def test_bad_predictions_are_refused_naming_the_video(ytvis_dataset):
    files, truth = ytvis_dataset
    evaluator = YTVISEvaluator(files["gt"], distributed=False)
    evaluator.reset()
    outputs = _perfect_outputs(truth)
    with pytest.raises(ValueError, match=r"video 10: pred_masks\[0\] has shape \(3, 6, 10\)"):
        evaluator.process(_inputs(10, 4), outputs[10])
    with pytest.raises(KeyError, match="video 10: the model output has no 'pred_labels'"):
        evaluator.process(_inputs(10, 3), {"pred_scores": [], "pred_masks": []})
    evaluator.process(_inputs(10, 3), dict(outputs[10], pred_labels=[5, 0]))
    with pytest.raises(KeyError, match="video 10: predicted class 5"):
        evaluator.evaluate()
    evaluator.reset()
    evaluator.process(_inputs(30, 3), outputs[10])
    with pytest.raises(ValueError, match=r"predictions for videos \[30\]"):
        evaluator.evaluate()


def test_no_predictions_score_zero(ytvis_dataset):
    files, _ = ytvis_dataset
    evaluator = YTVISEvaluator(files["gt"], distributed=False)
    evaluator.reset()
    assert evaluator.evaluate()["segm"]["AP"] == 0.0
