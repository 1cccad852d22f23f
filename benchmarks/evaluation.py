"""Evaluation speed: panoptic PQ over files, and instance RLE encoding + COCOeval.

    PYTHONPATH=. python benchmarks/evaluation.py [--images 500] [--instance-images 20]

Panoptic: ``pq_compute`` on generated COCO-panoptic PNG + JSON sets (640x480, ~20 segments
per image) against a straightforward per-segment implementation of panopticapi's
algorithm (tests/evaluation/panoptic_reference.py; panopticapi itself is not installable
here), both with one worker process per CPU, in the same run; the results must agree.
Instance: 100 masks per 640x480 image, encoded by ``encode_masks`` and by the published
per-mask ``pycocotools.mask.encode`` loop, then scored with COCOeval.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))

from panoptic_reference import make_panoptic_set, reference_pq_compute  # noqa: E402

from mask2former.evaluation.coco_evaluation import evaluate_coco_segm  # noqa: E402
from mask2former.evaluation.panoptic_quality import pq_compute  # noqa: E402
from mask2former.evaluation.rle import encode_masks  # noqa: E402


def _best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_panoptic(num_images: int, repeats: int) -> list[tuple]:
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        files = make_panoptic_set(root, num_images, seed=0, height=480, width=640, num_segments=20)
        segs = np.mean([len(a["segments_info"]) for a in json.load(open(files[0]))["annotations"]])
        print(f"generated {num_images} images ({segs:.1f} gt segments each) in "
              f"{time.perf_counter() - start:.1f} s")
        ours_s, ours = _best_of(repeats, lambda: pq_compute(*files))
        ref_s, ref = _best_of(repeats, lambda: reference_pq_compute(*files))
    for group in ("All", "Things", "Stuff"):
        for m in ("pq", "sq", "rq"):
            assert abs(ours[group][m] - ref[group][m]) < 1e-9, (group, m, ours[group], ref[group])
    print(f"PQ {100 * ours['All']['pq']:.2f} (both implementations agree)")
    return [
        ("panoptic pq_compute (ours)", num_images, ours_s, None),
        ("panoptic reference (panopticapi algorithm)", num_images, ref_s, None),
    ]


def _instance_set(num_images: int, num_masks: int, height: int, width: int):
    """Predicted masks per image (ellipses of varied size) and a matching COCO gt."""
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[0:height, 0:width]
    preds, images, anns = [], [], []
    for image_id in range(num_images):
        masks = np.zeros((num_masks, height, width), dtype=bool)
        for k in range(num_masks):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = np.exp(rng.uniform(np.log(4), np.log(height / 2), size=2))
            masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        classes = rng.integers(0, 10, size=num_masks)
        preds.append((torch.from_numpy(masks), torch.from_numpy(rng.random(num_masks)), classes))
        images.append({"id": image_id, "height": height, "width": width})
        gt_rles = mask_util.encode(np.asfortranarray(masks[:20].transpose(1, 2, 0).astype(np.uint8)))
        for rle, cls in zip(gt_rles, classes[:20]):
            area = float(mask_util.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            box = mask_util.toBbox(rle).tolist()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                         "segmentation": rle, "area": area, "bbox": box, "iscrowd": 0})
    cats = [{"id": i + 1, "name": str(i)} for i in range(10)]
    return preds, {"images": images, "annotations": anns, "categories": cats}


def _published_encode(masks: torch.Tensor) -> list[dict]:
    """The published evaluator's per-mask loop (detectron2 instances_to_coco_json)."""
    rles = [
        mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
        for mask in masks.numpy()
    ]
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def bench_instance(num_images: int, num_masks: int, repeats: int) -> list[tuple]:
    from pycocotools.coco import COCO

    preds, gt = _instance_set(num_images, num_masks, 480, 640)
    ours_s, ours = _best_of(repeats, lambda: [encode_masks(m) for m, _, _ in preds])
    ref_s, ref = _best_of(repeats, lambda: [_published_encode(m) for m, _, _ in preds])
    assert [[r["counts"] for r in img] for img in ours] == [[r["counts"] for r in img] for img in ref]
    results = [
        {"image_id": i, "category_id": int(c) + 1, "segmentation": r, "score": float(s)}
        for i, (rles, (_, scores, classes)) in enumerate(zip(ours, preds))
        for r, s, c in zip(rles, scores, classes)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    eval_s, coco_eval = _best_of(1, lambda: evaluate_coco_segm(coco_gt, results))
    print(f"instance segm AP {100 * coco_eval.stats[0]:.2f} over {len(results)} predictions")
    per_image = f"{num_masks} masks/img"
    return [
        (f"instance RLE encoding (ours), {per_image}", num_images, ours_s, 1000 * ours_s / num_images),
        (f"instance RLE encoding (published per-mask), {per_image}", num_images, ref_s,
         1000 * ref_s / num_images),
        ("instance COCOeval segm (pycocotools)", num_images, eval_s, None),
        ("instance encoding (ours) + COCOeval", num_images, ours_s + eval_s, None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="panoptic images")
    parser.add_argument("--instance-images", type=int, default=20, help="instance images")
    parser.add_argument("--masks", type=int, default=100, help="masks per instance image")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    rows = bench_panoptic(args.images, args.repeats)
    rows += bench_instance(args.instance_images, args.masks, args.repeats)
    print(f"\n| {'what':58s} | images | seconds | images/s | ms/image |")
    print(f"|{'-' * 60}|--------|---------|----------|----------|")
    for name, n, seconds, ms in rows:
        ms_text = f"{ms:8.2f}" if ms is not None else f"{1000 * seconds / n:8.2f}"
        print(f"| {name:58s} | {n:6d} | {seconds:7.3f} | {n / seconds:8.1f} | {ms_text} |")
    print(f"\npanoptic speed-up over the reference algorithm: {rows[1][2] / rows[0][2]:.2f}x")
    print(f"instance encoding speed-up over the published loop: {rows[3][2] / rows[2][2]:.2f}x")


if __name__ == "__main__":
    main()
