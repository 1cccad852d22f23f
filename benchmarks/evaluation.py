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
import resource
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


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _best_of(repeats: int, fn):
    """(best wall seconds, CPU seconds of that run, result)."""
    best, result = (float("inf"), 0.0), None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), _cpu_seconds()
        result = fn()
        best = min(best, (time.perf_counter() - start, _cpu_seconds() - cpu))
    return best[0], best[1], result


def bench_panoptic(num_images: int, repeats: int) -> list[tuple]:
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        files = make_panoptic_set(root, num_images, seed=0, height=480, width=640, num_segments=20)
        with open(files[0]) as f:
            segs = np.mean([len(a["segments_info"]) for a in json.load(f)["annotations"]])
        print(
            f"generated {num_images} images ({segs:.1f} gt segments each) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        ours_s, ours_cpu, ours = _best_of(repeats, lambda: pq_compute(*files))
        ref_s, ref_cpu, ref = _best_of(repeats, lambda: reference_pq_compute(*files))
    for group in ("All", "Things", "Stuff"):
        for m in ("pq", "sq", "rq"):
            assert abs(ours[group][m] - ref[group][m]) < 1e-9, (group, m, ours[group], ref[group])
    print(f"PQ {100 * ours['All']['pq']:.2f} (both implementations agree)")
    return [
        ("panoptic pq_compute (ours)", num_images, ours_s, ours_cpu),
        ("panoptic reference (panopticapi algorithm)", num_images, ref_s, ref_cpu),
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
        gt_rles = mask_util.encode(
            np.asfortranarray(masks[:20].transpose(1, 2, 0).astype(np.uint8))
        )
        for rle, cls in zip(gt_rles, classes[:20]):
            area = float(mask_util.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            box = mask_util.toBbox(rle).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
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
    ours_s, ours_cpu, ours = _best_of(repeats, lambda: [encode_masks(m) for m, _, _ in preds])
    ref_s, ref_cpu, ref = _best_of(repeats, lambda: [_published_encode(m) for m, _, _ in preds])
    assert [[r["counts"] for r in img] for img in ours] == [
        [r["counts"] for r in img] for img in ref
    ]
    results = [
        {"image_id": i, "category_id": int(c) + 1, "segmentation": r, "score": float(s)}
        for i, (rles, (_, scores, classes)) in enumerate(zip(ours, preds))
        for r, s, c in zip(rles, scores, classes)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    eval_s, eval_cpu, coco_eval = _best_of(1, lambda: evaluate_coco_segm(coco_gt, results))
    print(f"instance segm AP {100 * coco_eval.stats[0]:.2f} over {len(results)} predictions")
    per_image = f"{num_masks} masks/img"
    return [
        (f"instance RLE encoding (ours), {per_image}", num_images, ours_s, ours_cpu),
        (f"instance RLE encoding (published loop), {per_image}", num_images, ref_s, ref_cpu),
        ("instance COCOeval segm (pycocotools)", num_images, eval_s, eval_cpu),
        ("instance encoding (ours) + COCOeval", num_images, ours_s + eval_s, ours_cpu + eval_cpu),
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
    print("\nwall: best of the repeats; CPU: user + system seconds of that run, pools included")
    print(f"| {'what':54s} | images | wall s | images/s | wall ms/img | CPU s | CPU ms/img |")
    print(f"|{'-' * 56}|--------|--------|----------|-------------|-------|------------|")
    for name, n, wall, cpu in rows:
        print(
            f"| {name:54s} | {n:6d} | {wall:6.3f} | {n / wall:8.1f} | {1000 * wall / n:11.2f} "
            f"| {cpu:5.2f} | {1000 * cpu / n:10.2f} |"
        )
    for label, ours, ref in (
        ("panoptic: ours vs reference algorithm", 0, 1),
        ("instance encoding: ours vs published loop", 2, 3),
    ):
        print(
            f"{label}: {rows[ref][2] / rows[ours][2]:.2f}x faster (wall), "
            f"{rows[ref][3] / rows[ours][3]:.2f}x less CPU"
        )


if __name__ == "__main__":
    main()
