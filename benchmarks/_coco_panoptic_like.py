"""A synthetic dataset shaped like COCO panoptic, and model-shaped outputs for it.

``make_dataset(root, num_images)`` writes, for 640x480 images and 133 categories (80 things
with COCO's scattered ids 1..90, then 53 stuff), what ``coco_2017_val_panoptic_with_sem_seg``
gives the evaluators: the panoptic JSON + PNGs, the instance JSON (things, RLE), the
semantic label PNGs (contiguous ids, 255 VOID); it registers the metadata under a unique
name. ``model_outputs(dataset, index)`` gives one image's outputs as Mask2Former's
post-processing does: "panoptic_seg" ((H, W) int32 ids + segments_info with contiguous
category ids), "instances" (100 pred_masks as float 0/1, scores, pred_classes) and
"sem_seg" ((133, H, W) float scores): the ground truth jittered, with misses, class flips
and spurious segments, so that every matching path of the metrics runs.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from mask2former.data.catalog import MetadataCatalog
from mask2former.structures import Instances
from mask2former.utils.panoptic_png import id2rgb

_COCO_MISSING_THING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
THING_IDS = [i for i in range(1, 91) if i not in _COCO_MISSING_THING_IDS]  # 80
STUFF_IDS = [92 + 2 * i for i in range(53)]  # scattered like COCO's 92..200
CATEGORY_IDS = np.array(THING_IDS + STUFF_IDS)  # contiguous id = position (things first)
NUM_CLASSES = len(CATEGORY_IDS)
_counter = itertools.count()


@dataclass
class SyntheticDataset:
    name: str
    height: int
    width: int
    num_queries: int
    inputs: list[dict] = field(default_factory=list)  # the dataset dicts given to process()
    preds: list[dict] = field(default_factory=list)  # what model_outputs builds outputs from
    _scores: torch.Tensor = None  # (C, H, W) shared base of the sem_seg scores

    def remove(self) -> None:
        MetadataCatalog.remove(self.name)


def _cells(seeds: np.ndarray, height: int, width: int, step: int = 4):
    """(H, W) index of the nearest seed and the distance gap to the second nearest."""
    yy, xx = np.mgrid[0:height:step, 0:width:step] + step / 2
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    part = np.partition(d, 1, axis=-1)
    nearest, gap = d.argmin(-1), np.sqrt(part[..., 1]) - np.sqrt(part[..., 0])

    def up(a):
        return a.repeat(step, 0).repeat(step, 1)[:height, :width]

    return up(nearest), up(gap)


def _random_categories(rng, n: int) -> np.ndarray:
    """n dataset category ids, 60% things."""
    return np.where(rng.random(n) < 0.6, rng.choice(THING_IDS, n), rng.choice(STUFF_IDS, n))


def _write_png(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(path, image[..., ::-1] if image.ndim == 3 else image):
        raise OSError(f"cannot write {path}")


def _gt_image(rng, height: int, width: int, num_segments: int):
    """(seeds, categories, panoptic ids, segments_info, instance annotations, labels)."""
    seeds = rng.uniform((0, 0), (height, width), size=(num_segments, 2))
    cats = _random_categories(rng, num_segments)
    cell, gap = _cells(seeds, height, width)
    seg_ids = rng.permutation(np.unique(rng.integers(1, 256**3, 3 * num_segments)))
    ids = seg_ids[:num_segments][cell].astype(np.uint32)
    ids[gap < 4.0] = 0  # VOID borders
    crowd = (rng.random(num_segments) < 0.05) & np.isin(cats, THING_IDS)
    labels = np.where(ids > 0, np.searchsorted(CATEGORY_IDS, cats)[cell], 255).astype(np.uint8)
    segments, instances = [], []
    for k in range(num_segments):
        mask = ids == seg_ids[k]
        if not mask.any():
            continue
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        info = {"category_id": int(cats[k]), "iscrowd": int(crowd[k]), "area": int(mask.sum())}
        info["bbox"] = mask_util.toBbox(rle).tolist()
        segments.append({"id": int(seg_ids[k]), **info})
        if cats[k] in THING_IDS:
            instances.append({**info, "segmentation": rle | {"counts": rle["counts"].decode()}})
    return seeds, cats, ids, segments, instances, labels


def _prediction(rng, seeds, cats, height: int, width: int, num_queries: int) -> dict:
    """What model_outputs builds one image's outputs from."""
    keep = rng.random(len(seeds)) > 0.1
    extra = int(rng.integers(0, 4))
    jittered = seeds[keep] + rng.normal(0, 12, (keep.sum(), 2))
    pred_seeds = np.concatenate([jittered, rng.uniform((0, 0), (height, width), (extra, 2))])
    pred_cats = np.concatenate([cats[keep], _random_categories(rng, extra)])
    flip = rng.random(len(pred_cats)) < 0.1
    pred_cats[flip] = _random_categories(rng, int(flip.sum()))
    cell, gap = _cells(pred_seeds, height, width)
    # Instance queries beyond the predicted things: ellipses of random things, low scores.
    n_extra = num_queries - int(np.isin(pred_cats, THING_IDS).sum())
    centres = rng.uniform((0, 0), (height, width), (n_extra, 2))
    radii = np.exp(rng.uniform(np.log(6), np.log(height / 3), (n_extra, 2)))
    return {
        "cell": cell,
        "void": gap < 2.0,
        "categories": np.searchsorted(CATEGORY_IDS, pred_cats),  # contiguous
        "ellipses": np.concatenate([centres, radii], axis=1),
        "ellipse_classes": rng.integers(0, len(THING_IDS), n_extra),
        "scores": rng.uniform(0, 1, num_queries),
    }


def make_dataset(
    root: str,
    num_images: int,
    height: int = 480,
    width: int = 640,
    num_segments: int = 20,
    num_queries: int = 100,
    seed: int = 0,
) -> SyntheticDataset:
    """Write the ground truth under ``root`` and register its metadata (see the module doc)."""
    rng = np.random.default_rng(seed)
    folders = {k: os.path.join(root, k) for k in ("panoptic", "semseg")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    dataset = SyntheticDataset(f"_bench_coco_like_{next(_counter)}", height, width, num_queries)
    images, panoptic_anns, instance_anns = [], [], []
    for image_id in range(num_images):
        seeds, cats, ids, segments, instances, labels = _gt_image(rng, height, width, num_segments)
        png = f"{image_id:012d}.png"
        _write_png(os.path.join(folders["panoptic"], png), id2rgb(ids))
        _write_png(os.path.join(folders["semseg"], png), labels)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg"})
        images[-1].update(height=height, width=width)
        panoptic_anns.append({"image_id": image_id, "file_name": png, "segments_info": segments})
        for ann in instances:
            instance_anns.append({"id": len(instance_anns) + 1, "image_id": image_id, **ann})
        dataset.inputs.append(
            {"image_id": image_id, "file_name": images[-1]["file_name"], "height": height}
            | {"width": width, "sem_seg_file_name": os.path.join(folders["semseg"], png)}
        )
        dataset.preds.append(_prediction(rng, seeds, cats, height, width, num_queries))
    categories = [
        {"id": int(c), "name": f"class{c}", "isthing": int(c in THING_IDS)} for c in CATEGORY_IDS
    ]
    files = {}
    things = categories[: len(THING_IDS)]
    for key, anns, cats in (
        ("panoptic", panoptic_anns, categories),
        ("instances", instance_anns, things),  # as COCO's instances json: things only
    ):
        files[key] = os.path.join(root, f"{key}.json")
        with open(files[key], "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    names = [c["name"] for c in categories]
    MetadataCatalog.get(dataset.name).set(
        panoptic_json=files["panoptic"],
        panoptic_root=folders["panoptic"],
        json_file=files["instances"],
        thing_classes=names[: len(THING_IDS)],
        stuff_classes=names,
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(THING_IDS)},
        stuff_dataset_id_to_contiguous_id={int(c): i for i, c in enumerate(CATEGORY_IDS)},
        label_divisor=1000,
        ignore_label=255,
        evaluator_type="coco_panoptic_seg",
    )
    dataset._scores = torch.from_numpy(rng.random((NUM_CLASSES, height, width), np.float32))
    return dataset


def _instances(pred: dict, panoptic: np.ndarray, height: int, width: int) -> Instances:
    """100 queries: the predicted thing segments, then ellipses; pred_masks float 0/1."""
    things = np.flatnonzero(pred["categories"] < len(THING_IDS))
    yy, xx = np.ogrid[0:height, 0:width]
    masks = torch.zeros((len(pred["scores"]), height, width))
    for q, k in enumerate(things):
        masks[q] = torch.from_numpy(panoptic == k + 1)
    for q, (cy, cx, ry, rx) in enumerate(pred["ellipses"], start=len(things)):
        masks[q] = torch.from_numpy(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    result = Instances((height, width))
    result.pred_masks = masks
    result.scores = torch.from_numpy(pred["scores"]).float()
    classes = np.concatenate([pred["categories"][things], pred["ellipse_classes"]])
    result.pred_classes = torch.from_numpy(classes)
    return result


def model_outputs(dataset: SyntheticDataset, index: int, scores: torch.Tensor) -> dict:
    """Image ``index``'s outputs; its sem_seg scores are written into ``scores`` (C, H, W),
    a buffer the caller reuses (a fresh 163 MB tensor per image costs more than the rest)."""
    pred, height, width = dataset.preds[index], dataset.height, dataset.width
    panoptic = (pred["cell"] + 1).astype(np.int32)  # segment k has id k + 1
    panoptic[pred["void"]] = 0
    segments = [
        {"id": k + 1, "category_id": int(c), "isthing": bool(c < len(THING_IDS))}
        for k, c in enumerate(pred["categories"])
        if (panoptic == k + 1).any()
    ]
    # Scores: the shared noise in [0, 1) plus 1 at the predicted class of each pixel.
    scores.copy_(dataset._scores)
    label = torch.from_numpy(pred["categories"][pred["cell"]])
    scores.scatter_add_(0, label[None], torch.ones(1, height, width))
    return {
        "panoptic_seg": (torch.from_numpy(panoptic), segments),
        "instances": _instances(pred, panoptic, height, width),
        "sem_seg": scores,
    }
