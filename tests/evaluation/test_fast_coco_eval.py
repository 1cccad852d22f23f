"""FastCOCOeval gives pycocotools' COCOeval numbers bit for bit."""

import contextlib
import copy
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.evaluation import fast_coco_eval
from mask2former.evaluation.fast_coco_eval import FastCOCOeval


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _random_mask(rng, size, grid=8):
    """A rectangle on a coarse grid (so that equal masks, hence tied IoUs, are common)."""
    y0, x0 = rng.integers(0, size // grid, 2) * grid
    h, w = rng.integers(1, size // grid + 1, 2) * grid
    mask = np.zeros((size, size), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def _dataset(seed, num_images=6, size=128, num_cats=4):
    """gt (COCO) and results: crowds, duplicate gts, tied scores, near and far detections,
    categories without ground truth, images without detections; areas in all three ranges."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "height": size, "width": size} for i in range(num_images)]
    anns, results = [], []
    for image in images:
        gt_masks = []
        for _ in range(rng.integers(0, 7)):
            mask, cat = _random_mask(rng, size), int(rng.integers(1, num_cats))  # never cat 4
            crowd = int(rng.random() < 0.15)
            copies = 2 if rng.random() < 0.1 else 1  # a duplicate gt: equal IoUs
            for _ in range(copies):
                area = float(mask.sum()) if rng.random() < 0.8 else float(rng.integers(1, 12000))
                anns.append(
                    {"id": len(anns) + 1, "image_id": image["id"], "category_id": cat}
                    | {"segmentation": _rle(mask), "area": area, "iscrowd": crowd}
                    | {
                        "bbox": mask_util.toBbox(
                            mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                        ).tolist()
                    }
                )
                gt_masks.append((mask, cat))
        if image["id"] == 12:
            continue  # no detections on this image
        for _ in range(rng.integers(0, 30)):
            if gt_masks and rng.random() < 0.6:
                mask, cat = gt_masks[rng.integers(len(gt_masks))]
                mask = np.roll(mask, tuple(rng.integers(-8, 9, 2) // 8 * 8), axis=(0, 1))
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, num_cats + 1))
            else:
                mask, cat = _random_mask(rng, size), int(rng.integers(1, num_cats + 1))
            score = float(rng.integers(0, 5) / 4) if rng.random() < 0.3 else float(rng.random())
            results.append(
                {"image_id": image["id"], "category_id": cat, "segmentation": _rle(mask)}
                | {"score": score}
            )
    cats = [{"id": c, "name": str(c)} for c in range(1, num_cats + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": cats}
        coco.createIndex()
    return coco, results


def _run(cls, coco, results, iou_type="segm", max_dets=(1, 10, 100), coco_dt=None, **params):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_dt or coco.loadRes([dict(r) for r in results])
        ev = cls(coco, coco_dt, iou_type)
        ev.params.maxDets = list(max_dets)
        for key, value in params.items():
            setattr(ev.params, key, value)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _assert_same(ours, ref):
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ours.eval[key], ref.eval[key]), key
        assert ours.eval[key].dtype == ref.eval[key].dtype
    assert np.array_equal(ours.stats, ref.stats)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_equal_to_pycocotools_bit_for_bit(seed, iou_type):
    coco, results = _dataset(seed)
    max_dets = (1, 3, 10) if seed % 2 else (1, 10, 100)  # truncation by maxDets too
    ours = _run(FastCOCOeval, coco, results, iou_type, max_dets)
    ref = _run(COCOeval, coco, results, iou_type, max_dets)
    _assert_same(ours, ref)
    # Not vacuous: some categories score, others are absent (-1).
    assert (ref.eval["precision"] > 0).any() and (ref.eval["precision"] == -1).any()


@pytest.mark.parametrize("max_dets", [(1, 2, 3), (1, 3, 4), (2, 3, 5), (0, 2, 3)])
def test_max_dets_cutting_exactly_one_detection(max_dets):
    """Images whose detections of a category number exactly one more than a maxDets."""
    coco, _ = _dataset(0, num_images=1)
    rng = np.random.default_rng(1)
    image_id = coco.dataset["images"][0]["id"]
    anns, results = [], []
    for k in range(4):
        mask = np.zeros((128, 128), dtype=bool)
        mask[8 * k : 8 * k + 40, 20 * k : 20 * k + 40] = True
        anns.append(
            {"id": k + 1, "image_id": image_id, "category_id": 1, "segmentation": _rle(mask)}
            | {"area": float(mask.sum()), "iscrowd": 0}
        )
        results.append(
            {"image_id": image_id, "category_id": 1, "segmentation": _rle(mask)}
            | {"score": float(rng.random())}
        )
    coco.dataset["annotations"] = anns
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for n in range(1, 5):
        ours = _run(FastCOCOeval, coco, results[:n], max_dets=max_dets)
        _assert_same(ours, _run(COCOeval, coco, results[:n], max_dets=max_dets))


def test_ground_truth_as_detections_gives_ap_1():
    coco, _ = _dataset(3)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        | {"segmentation": a["segmentation"]}
        for a in coco.dataset["annotations"]
        if not a["iscrowd"]
    ]
    assert _run(FastCOCOeval, coco, results).stats[0] == pytest.approx(1.0)


def test_unsupported_settings_are_refused():
    coco, results = _dataset(0)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = FastCOCOeval(coco, coco.loadRes(results), "segm")
    ev.params.useCats = 0
    with pytest.raises(ValueError, match="useCats"):
        ev.evaluate()


@pytest.mark.parametrize("seed", range(3))
def test_subsets_of_images_and_categories_and_own_thresholds(seed):
    """params.imgIds / catIds subsets, other IoU thresholds, recall points and area ranges."""
    coco, results = _dataset(seed, num_images=8)
    params = {
        "imgIds": [11, 13, 14, 17],
        "catIds": [1, 3, 4],
        "iouThrs": np.array([0.3, 0.55, 0.55, 0.9, 1.0]),
        "recThrs": np.linspace(0.0, 1.00, 37),
        "areaRng": [[0, 1e10], [0, 1024], [1024, 4096], [4096, 1e10], [500, 600]],
        "areaRngLbl": ["all", "small", "medium", "large", "narrow"],
    }
    ours = _run(FastCOCOeval, coco, results, max_dets=(2, 5, 20), **params)
    ref = _run(COCOeval, coco, results, max_dets=(2, 5, 20), **params)
    _assert_same(ours, ref)
    assert ours.eval["precision"].shape[2] == 3 and (ref.eval["precision"] > 0).any()


def test_polygon_ground_truths_and_unusual_ids(monkeypatch):
    """Polygon ground truths; a gt id 0 (pycocotools: a match to it does not count) and
    detection ids <= 0 (their match leaves the gt free); many pairs matched in chunks."""
    monkeypatch.setattr(fast_coco_eval, "_PAIRS_PER_CHUNK", 3)
    coco, results = _dataset(5, num_images=10)
    for ann in coco.dataset["annotations"][::3]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    coco.dataset["annotations"][1]["id"] = 0
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    refs = []
    for cls in (FastCOCOeval, COCOeval):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco.loadRes(copy.deepcopy(results))
        for i, ann in enumerate(coco_dt.dataset["annotations"]):
            ann["id"] = -(i + 1) if i % 3 == 1 else 0 if i == 2 else i + 1  # unique ids
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        refs.append(_run(cls, copy.deepcopy(coco), None, coco_dt=coco_dt))
    _assert_same(*refs)
    assert (refs[1].eval["precision"] > 0).any()


def test_many_detections_of_one_ground_truth_with_tied_scores():
    """One pair with 60 equal detections of tied scores, cut by maxDets, next to small pairs."""
    coco, results = _dataset(2)
    gt = next(a for a in coco.dataset["annotations"] if not a["iscrowd"])
    results += [
        {"image_id": gt["image_id"], "category_id": gt["category_id"], "score": 0.5}
        | {"segmentation": gt["segmentation"]}
        for _ in range(60)
    ]
    for max_dets in ((1, 10, 100), (1, 10, 30)):
        _assert_same(
            _run(FastCOCOeval, coco, results, max_dets=max_dets),
            _run(COCOeval, coco, results, max_dets=max_dets),
        )


def test_no_detection_reaches_a_threshold():
    coco, results = _dataset(1)
    ref = _run(COCOeval, coco, results, iouThrs=np.array([0.999999]))
    _assert_same(_run(FastCOCOeval, coco, results, iouThrs=np.array([0.999999])), ref)


def test_counts_needed_for_recall_points_equal_searchsorted():
    """The least count c with c / n >= r, as pycocotools finds it: searchsorted(rc, r)."""
    rng = np.random.default_rng(0)
    recalls = np.sort(np.r_[np.linspace(0.0, 1.0, 101), rng.random(200), 1 / 3, 2 / 3, 1.5])
    num_gt = np.arange(1, 3000)
    expected = [np.searchsorted(np.arange(n + 1).astype(float) / n, recalls) for n in num_gt]
    assert np.array_equal(fast_coco_eval._counts_needed(num_gt, recalls), np.stack(expected))
