"""Cityscapes semantic (IoU, iIoU) and instance (AP, AP50) evaluation with cityscapesScripts.

Predictions are written in the Cityscapes result formats to a temporary folder shared by
all processes; the main process then runs cityscapesScripts' own evaluation on the ground
truth under the dataset's ``gt_dir`` (``<gt_dir>/<city>/*_gtFine_{labelIds,instanceIds}.png``).
Only the ground-truth images of processed inputs are scored, so a subset can be evaluated.
The temporary folder is removed after ``evaluate``, or, when an evaluation fails half-way,
once the evaluator is garbage-collected or Python exits.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import io
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional

import cv2
import numpy as np
import torch

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.evaluator import DatasetEvaluator
from mask2former.utils import comm

logger = logging.getLogger(__name__)


def _city_frame(file_name: str) -> str:
    """ "<city>_<seq>_<frame>" of a Cityscapes file name."""
    parts = os.path.basename(file_name).split("_")
    if len(parts) < 3:
        raise ValueError(f"{file_name!r} is not a Cityscapes file name (<city>_<seq>_<frame>_...)")
    return "_".join(parts[:3])


class _NumpyWithIn1d:
    """numpy plus ``in1d`` (removed in NumPy 2.4, still called by cityscapesScripts 2.2)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def in1d(ar1: Any, ar2: Any, invert: bool = False) -> np.ndarray:
        return np.isin(np.asarray(ar1).ravel(), ar2, invert=invert)


def _cityscapes_module(name: str) -> Any:
    """Import a cityscapesScripts evaluation module, giving it ``np.in1d`` where missing."""
    module = importlib.import_module(f"cityscapesscripts.evaluation.{name}")
    if not hasattr(np, "in1d"):
        module.np = _NumpyWithIn1d()
    return module


def _write_dict_json(data: Any, path: str, folder: str) -> None:
    """Stands in for cityscapesScripts' ``writeDict2JSON``, which fails on NumPy 2 integer
    scalars and writes relative paths (its "matches.json") into the working directory:
    numbers are converted and relative paths land in ``folder``."""

    def default(o: Any) -> Any:
        return o.item() if isinstance(o, np.generic) else o.__dict__

    with open(os.path.join(folder, path), "w") as f:  # join keeps absolute paths
        json.dump(data, f, default=default)


def _run_cityscapes(func: Callable[[], Any]) -> Any:
    """Run a cityscapesScripts call, its printout going to the log; its exit becomes an error."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            return func()
    except SystemExit as e:  # cityscapesScripts' printError calls sys.exit
        raise RuntimeError(f"cityscapesScripts evaluation failed: {out.getvalue()[-2000:]}") from e
    finally:
        logger.debug("cityscapesScripts output:\n%s", out.getvalue())


class _CityscapesEvaluator(DatasetEvaluator):
    """Shared temp folder (created on every process, rank 0's used) and gt selection."""

    _gt_suffix = ""

    def __init__(self, dataset_name: str):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._temp_dir: Optional[str] = None
        self._remove_temp_dir: Optional[weakref.finalize] = None
        self._frames: list[str] = []

    def reset(self) -> None:
        self._cleanup()
        own = tempfile.mkdtemp(prefix="cityscapes_eval_")
        self._temp_dir = comm.all_gather(own)[0]
        if self._temp_dir != own:
            os.rmdir(own)
        else:  # runs once: from _cleanup, or when self is collected or Python exits
            self._remove_temp_dir = weakref.finalize(self, shutil.rmtree, own, ignore_errors=True)
        self._frames = []

    def _cleanup(self) -> None:
        if self._remove_temp_dir is not None:
            self._remove_temp_dir()

    def _cityscapes_args(self, cs_eval):
        """cityscapesScripts' module-level ``args``, pointed at this evaluator's predictions."""
        args = cs_eval.args
        args.predictionPath = os.path.abspath(self._temp_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        return args

    def _gather_gt_files(self) -> Optional[list[str]]:
        """The gt files of every process's images (main process; None elsewhere)."""
        comm.synchronize()
        frames = sorted({f for part in comm.gather(self._frames, dst=0) for f in part})
        if not comm.is_main_process():
            return None
        gt_dir = self._metadata.gt_dir
        pattern = os.path.join(gt_dir, "*", "*" + self._gt_suffix)
        by_frame = {_city_frame(p): p for p in glob.glob(pattern)}
        missing = [f for f in frames if f not in by_frame]
        if missing:
            raise FileNotFoundError(
                f"no ground truth {pattern!r} for {missing[:5]} ({len(missing)} images)"
            )
        return [by_frame[f] for f in frames]


class CityscapesSemSegEvaluator(_CityscapesEvaluator):
    """IoU / iIoU over classes and categories ("IoU", "iIoU", "IoU_sup", "iIoU_sup")."""

    required_outputs = ("sem_seg",)

    _gt_suffix = "_gtFine_labelIds.png"

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        from cityscapesscripts.helpers.labels import trainId2label

        for inp, out in zip(inputs, outputs):
            frame = _city_frame(inp["file_name"])
            train_ids = out["sem_seg"].argmax(dim=0).to(torch.int64).cpu().numpy()
            label_ids = np.full(train_ids.shape, 255, dtype=np.uint8)
            for train_id, label in trainId2label.items():
                if not label.ignoreInEval:
                    label_ids[train_ids == train_id] = label.id
            cv2.imwrite(os.path.join(self._temp_dir, frame + "_pred.png"), label_ids)
            self._frames.append(frame)

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        cs_eval = _cityscapes_module("evalPixelLevelSemanticLabeling")
        gt_files = self._gather_gt_files()
        if gt_files is None:
            return {}
        args = self._cityscapes_args(cs_eval)
        try:
            preds = _run_cityscapes(lambda: [cs_eval.getPrediction(args, gt) for gt in gt_files])
            res = _run_cityscapes(lambda: cs_eval.evaluateImgLists(preds, gt_files, args))
        finally:
            self._cleanup()
        return OrderedDict(
            sem_seg={
                "IoU": 100.0 * res["averageScoreClasses"],
                "iIoU": 100.0 * res["averageScoreInstClasses"],
                "IoU_sup": 100.0 * res["averageScoreCategories"],
                "iIoU_sup": 100.0 * res["averageScoreInstCategories"],
            }
        )


class CityscapesInstanceEvaluator(_CityscapesEvaluator):
    """Instance AP and AP50 ("segm") from cityscapesScripts' instance-level evaluation.

    Predicted classes are contiguous indices into metadata thing_classes, whose names must
    be Cityscapes label names.
    """

    required_outputs = ("instances",)

    _gt_suffix = "_gtFine_instanceIds.png"

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        from cityscapesscripts.helpers.labels import name2label

        for inp, out in zip(inputs, outputs):
            frame = _city_frame(inp["file_name"])
            instances = out["instances"]
            lines = []
            masks = instances.pred_masks
            masks = (masks >= 0.5 if masks.is_floating_point() else masks.bool()).cpu().numpy()
            for i, (cls, score) in enumerate(
                zip(instances.pred_classes.tolist(), instances.scores.tolist())
            ):
                name = self._metadata.thing_classes[cls]
                png = f"{frame}_{i}_{name.replace(' ', '_')}.png"
                cv2.imwrite(os.path.join(self._temp_dir, png), masks[i].astype(np.uint8) * 255)
                lines.append(f"{png} {name2label[name].id} {score}\n")
            with open(os.path.join(self._temp_dir, frame + "_pred.txt"), "w") as f:
                f.writelines(lines)
            self._frames.append(frame)

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        cs_eval = _cityscapes_module("evalInstanceLevelSemanticLabeling")
        gt_files = self._gather_gt_files()
        if gt_files is None:
            return {}
        args = self._cityscapes_args(cs_eval)
        args.gtInstancesFile = os.path.join(self._temp_dir, "gtInstances.json")
        cs_eval.writeDict2JSON = functools.partial(_write_dict_json, folder=self._temp_dir)
        try:
            preds = _run_cityscapes(lambda: [cs_eval.getPrediction(gt, args) for gt in gt_files])
            res = _run_cityscapes(lambda: cs_eval.evaluateImgLists(preds, gt_files, args))
        finally:
            self._cleanup()
        averages = res["averages"]
        return OrderedDict(segm={"AP": averages["allAp"] * 100, "AP50": averages["allAp50%"] * 100})
