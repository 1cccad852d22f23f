"""YouTube-VIS evaluation: video predictions -> the challenge's results.json and video AP."""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from mask2former.config import CfgNode
from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.evaluator import DatasetEvaluator, gather_on_main
from mask2former.evaluation.video_ap import Track, evaluate_video_ap
from mask2former.structures import RLEMasks
from mask2former.structures.rle import encode_masks
from mask2former.utils.file_io import PathManager, load_json, save_json

logger = logging.getLogger(__name__)

__all__ = ["YTVISEvaluator", "load_ytvis_ground_truth", "video_output_to_results"]

RESULTS_FILE = "results.json"


def _frame_masks(masks: Any, video_id: Any, k: int) -> np.ndarray:
    """One predicted instance's masks, a (T, H, W) tensor / array or a list of (H, W) -> bool
    (T, H, W) array."""
    if isinstance(masks, (list, tuple)):
        masks = [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m for m in masks]
        masks = np.stack([np.asarray(m) for m in masks]) if masks else np.zeros((0, 0, 0))
    elif isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(
            f"video {video_id}: pred_masks[{k}] should be (T, H, W) per-frame masks, got shape "
            f"{masks.shape}"
        )
    return masks >= 0.5 if np.issubdtype(masks.dtype, np.floating) else masks.astype(bool)


def video_output_to_results(
    video_id: Any, output: dict, length: int, height: int, width: int
) -> list[dict]:
    """One video's model output -> the challenge's result dicts (contiguous category ids).

    ``output``: "pred_scores" (N floats), "pred_labels" (N contiguous class ids),
    "pred_masks" (N instances, each T = ``length`` per-frame (H, W) bool masks at the
    video's size, a (T, H, W) tensor, a list, or the :class:`RLEMasks` of clip-by-clip
    inference, whose encodings are taken as they are). Each result: {"video_id", "score",
    "category_id", "segmentations": one compressed RLE (counts as str) per frame}.
    """
    for key in ("pred_scores", "pred_labels", "pred_masks"):
        if key not in output:
            raise KeyError(f"video {video_id}: the model output has no {key!r}")
    scores, labels, masks = output["pred_scores"], output["pred_labels"], output["pred_masks"]
    if not len(scores) == len(labels) == len(masks):
        raise ValueError(
            f"video {video_id}: {len(scores)} pred_scores, {len(labels)} pred_labels and "
            f"{len(masks)} pred_masks"
        )
    results = []
    for k, (score, label, instance_masks) in enumerate(zip(scores, labels, masks)):
        if isinstance(instance_masks, RLEMasks):  # clip-by-clip inference: already encoded
            frames, segmentations = instance_masks, instance_masks.rles
        else:
            frames = _frame_masks(instance_masks, video_id, k)
            segmentations = None
        if tuple(frames.shape) != (length, height, width):
            raise ValueError(
                f"video {video_id}: pred_masks[{k}] has shape {tuple(frames.shape)}; expected "
                f"one mask per frame at the video's size, ({length}, {height}, {width})"
            )
        results.append(
            {
                "video_id": video_id,
                "score": float(score),
                "category_id": int(label),
                "segmentations": (encode_masks(frames) if segmentations is None else segmentations),
            }
        )
    return results


def _ground_truth_rle(segm: Any, height: int, width: int, where: str) -> dict:
    """A frame's ground-truth segmentation (polygons, RLE) -> compressed RLE."""
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm, dict) and "counts" in segm:
        return (
            mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        )
    raise ValueError(f"{where}: bad segmentation {segm!r:.80}")


def load_ytvis_ground_truth(json_file: str) -> tuple[dict, list[int], Optional[list[Track]]]:
    """({video id: video}, sorted category ids, ground-truth tracks or None for a file without
    "annotations", a test split) of a YouTube-VIS JSON. Errors name the file."""
    data = load_json(json_file, "YouTube-VIS annotation file")
    for key in ("videos", "categories"):
        if key not in data:
            raise ValueError(f"{json_file}: no {key!r} at the top level")
    videos = {v["id"]: v for v in data["videos"]}
    category_ids = sorted(c["id"] for c in data["categories"])
    if "annotations" not in data:
        return videos, category_ids, None
    tracks = []
    for anno in data["annotations"]:
        video = videos.get(anno.get("video_id"))
        where = f"{json_file}: annotation {anno.get('id')}"
        if video is None or len(anno.get("segmentations", ())) != video["length"]:
            raise ValueError(
                f"{where}: needs the 'video_id' of a video in 'videos' and one entry of "
                "'segmentations' per frame of it"
            )
        rles = [
            None if not s else _ground_truth_rle(s, video["height"], video["width"], where)
            for s in anno["segmentations"]
        ]
        tracks.append(
            Track(
                anno["video_id"],
                anno["category_id"],
                rles,
                iscrowd=bool(anno.get("iscrowd", 0)),
                areas=anno.get("areas"),
            )
        )
    return videos, category_ids, tracks


class YTVISEvaluator(DatasetEvaluator):
    """YouTube-VIS video instance segmentation: writes ``results.json`` in the challenge's
    submission format (dataset category ids) to ``output_dir`` and, where the dataset's
    ``json_file`` has annotations, reports video AP (see :mod:`.video_ap`) as "segm": AP,
    AP50, AP75, APs, APm, APl, AR1, AR10 and AP-<class>, in percent.

    ``process`` takes the inputs of the video mapper (one dict per video: "video_id",
    "length", "height", "width") and the model's outputs, one dict per video or the dict of
    a one-video batch: see :func:`video_output_to_results`.
    """

    required_outputs = ("pred_scores", "pred_labels", "pred_masks")

    def __init__(
        self,
        dataset_name: str,
        tasks: Any = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        """The published argument order (``YTVISEvaluator(name, cfg, True, output_folder)`` in
        its ``train_net_video.py``): ``tasks`` None, ("segm",) or a config, which is not read
        (the published evaluator ignores it too); the task is always "segm"."""
        if isinstance(tasks, CfgNode):
            logger.warning("YTVISEvaluator does not read the config given as its tasks")
        elif tasks is not None and tuple(tasks) != ("segm",):
            raise ValueError(f"YouTube-VIS is scored on masks only: tasks ('segm',), got {tasks!r}")
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._distributed = distributed
        self._output_dir = output_dir
        json_file = PathManager.get_local_path(self._metadata.json_file)
        self._videos, self._category_ids, self._ground_truths = load_ytvis_ground_truth(json_file)
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict] | dict) -> None:
        if isinstance(outputs, dict):  # the published video model returns one video's dict
            outputs = [outputs]
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} input videos but {len(outputs)} outputs")
        for video, output in zip(inputs, outputs):
            self._predictions.extend(
                video_output_to_results(
                    video["video_id"], output, video["length"], video["height"], video["width"]
                )
            )

    def _to_dataset_ids(self, predictions: list[dict]) -> list[dict]:
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            return predictions
        reverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
        for pred in predictions:
            if pred["category_id"] not in reverse:
                raise KeyError(
                    f"video {pred['video_id']}: predicted class {pred['category_id']} is not a "
                    f"class of {self._dataset_name!r} (contiguous ids {sorted(reverse)})"
                )
        return [{**p, "category_id": reverse[p["category_id"]]} for p in predictions]

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        gathered = gather_on_main(self._predictions, self._distributed)
        if gathered is None:
            return {}
        results = self._to_dataset_ids(list(itertools.chain(*gathered)))
        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_FILE)
            save_json(results, path)
            logger.info("Saved %d video predictions to %s", len(results), path)
        if self._ground_truths is None:
            logger.info("%s has no annotations: results.json only", self._dataset_name)
            return {}
        return OrderedDict(segm=self._video_ap(results))

    def _video_ap(self, results: list[dict]) -> dict[str, float]:
        if not results:
            logger.warning("No predictions from the model for %s: AP 0", self._dataset_name)
        unknown = {r["video_id"] for r in results} - set(self._videos)
        if unknown:
            raise ValueError(
                f"predictions for videos {sorted(unknown)[:5]} that are not in "
                f"{self._metadata.json_file}"
            )
        predictions = [
            Track(r["video_id"], r["category_id"], r["segmentations"], score=r["score"])
            for r in results
        ]
        result = evaluate_video_ap(
            self._ground_truths, predictions, list(self._videos), self._category_ids
        )
        metrics = result.summary()
        names = self._class_names()
        for category_id, ap in result.per_category_ap().items():
            metrics[f"AP-{names.get(category_id, category_id)}"] = ap
        return metrics

    def _class_names(self) -> dict[int, str]:
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        classes: Sequence[str] = self._metadata.get("thing_classes") or []
        if mapping is None:
            return {c: classes[k] for k, c in enumerate(self._category_ids) if k < len(classes)}
        return {c: classes[k] for c, k in mapping.items() if k < len(classes)}
