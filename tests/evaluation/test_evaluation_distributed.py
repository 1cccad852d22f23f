"""Two processes (gloo on CPU) give the same metrics as one."""

import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eval_helpers import register_panoptic

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from mask2former.structures import Instances
from tests.evaluation.test_panoptic_evaluation import model_outputs


def _semantic_set(root, write=False):
    """Four random label maps (written to disk with ``write``) and seeded random scores."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        gt = rng.integers(0, 13, size=(60, 80))
        gt[rng.random(gt.shape) < 0.1] = 255
        path = os.path.join(root, f"sem_{i}.png")
        if write:
            cv2.imwrite(path, gt.astype(np.uint8))
        items.append((path, torch.from_numpy(rng.random((13, 60, 80)).astype(np.float32))))
    return items


def _batches(meta, coco_gt, root):
    """The full list of (input, output) pairs, every task present in each output."""
    inputs, outputs = model_outputs(meta["name"], root["pred_json"], root["pred_folder"])
    rng = np.random.default_rng(1)
    pairs = []
    for k, ((path, scores), inp, out) in enumerate(
        zip(_semantic_set(root["dir"]), inputs, outputs)
    ):
        masks, classes = coco_gt[k % len(coco_gt)]
        inst = Instances(masks.shape[1:])
        inst.pred_masks = torch.from_numpy(np.roll(masks, k, axis=2))
        inst.scores = torch.from_numpy(rng.random(len(classes)).astype(np.float32))
        inst.pred_classes = torch.from_numpy(classes)
        inp = dict(inp, sem_seg_file_name=path, image_id=inp["image_id"])
        pairs.append((inp, dict(out, sem_seg=scores, instances=inst)))
    return pairs


def _evaluate(meta, coco_meta, coco_gt, root, rank, world):
    for m in (meta, coco_meta):
        if m["name"] not in MetadataCatalog:
            MetadataCatalog.get(m["name"]).set(**{k: v for k, v in m.items() if k != "name"})
    evaluator = DatasetEvaluators(
        [
            SemSegEvaluator(meta["name"]),
            COCOPanopticEvaluator(meta["name"], root["out"]),
            _COCOByIndex(coco_meta["name"]),
        ]
    )
    evaluator.reset()
    for inp, out in _batches(meta, coco_gt, root)[rank::world]:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


class _COCOByIndex(COCOEvaluator):
    """COCOEvaluator on the instance set, whose image ids are 1..4 (panoptic ids are 0..3)."""

    def process(self, inputs, outputs):
        super().process([{"image_id": inp["image_id"] + 1} for inp in inputs], outputs)


def _worker(rank, world, init_file, args, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = _evaluate(*args, rank, world)
        if rank == 0:
            torch.save(results, result_file)
        else:
            assert results == {}
    finally:
        dist.destroy_process_group()


def _panoptic_predictions(output_dir):
    """{PNG name: (its bytes, its annotation)} of a COCOPanopticEvaluator's output_dir."""
    with open(output_dir / "panoptic_seg_predictions.json") as f:
        annotations = {a["file_name"]: a for a in json.load(f)["annotations"]}
    folder = output_dir / "panoptic_seg_predictions"
    assert sorted(os.listdir(folder)) == sorted(annotations)
    return {n: ((folder / n).read_bytes(), a) for n, a in annotations.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys()
        for key, value in a[task].items():
            other = b[task][key]
            assert (math.isnan(value) and math.isnan(other)) or value == pytest.approx(
                other, abs=1e-9
            ), (task, key)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, coco_instance_dataset):
    coco_name, coco_gt = coco_instance_dataset
    name, files = register_panoptic(str(tmp_path))
    try:
        meta = dict(MetadataCatalog.get(name).as_dict(), name=name)
        coco_meta = dict(MetadataCatalog.get(coco_name).as_dict(), name=coco_name)
        root = {"dir": str(tmp_path), "pred_json": files[1], "pred_folder": files[3]}
        gt_list = [coco_gt[i] for i in sorted(coco_gt)]
        _semantic_set(str(tmp_path), write=True)
        single = _evaluate(meta, coco_meta, gt_list, {**root, "out": str(tmp_path / "1")}, 0, 1)
        result_file = str(tmp_path / "results.pt")
        args = (meta, coco_meta, gt_list, {**root, "out": str(tmp_path / "2")})
        mp.spawn(_worker, args=(2, str(tmp_path / "init"), args, result_file), nprocs=2)
        double = torch.load(result_file, weights_only=False)
    finally:
        MetadataCatalog.remove(name)
    _assert_same(single, double)
    # the main process writes every process's panoptic predictions
    written = [_panoptic_predictions(tmp_path / out) for out in ("1", "2")]
    assert written[0] == written[1] and len(written[0]) == 4
    assert 0 < single["panoptic_seg"]["PQ"] < 100 and 0 < single["segm"]["AP"] < 100
    assert 0 < single["sem_seg"]["mIoU"] < 100
