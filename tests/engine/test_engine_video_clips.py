"""Clip-by-clip video inference (MODEL.MASK_FORMER.TEST.CLIP_LENGTH) evaluated through
``DefaultTrainer.test`` and ``YTVISEvaluator`` on ``ytvis_shapes`` (12-frame videos)."""

import json
import math

import torch

from mask2former.engine import DefaultTrainer
from mask2former.modeling import build_model
from tests.engine.test_engine_video import tiny_video_training_cfg


def _results(cfg, model, clip_length: int) -> tuple[dict, list[dict]]:
    model.clip_length = clip_length
    metrics = DefaultTrainer.test(cfg, model)["segm"]
    path = f"{cfg.OUTPUT_DIR}/inference/{cfg.DATASETS.TEST[0]}/results.json"
    with open(path) as f:
        return metrics, json.load(f)


def test_clip_inference_is_evaluated_and_one_clip_gives_the_whole_video_results(tmp_path):
    cfg = tiny_video_training_cfg(tmp_path)
    cfg.merge_from_list(["MODEL.MASK_FORMER.TEST.CLIP_LENGTH", 5])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert (model.clip_length, model.clip_overlap) == (5, 2)

    whole_metrics, whole = _results(cfg, model, 0)
    one_clip_metrics, one_clip = _results(cfg, model, 12)  # the videos have 12 frames
    assert one_clip == whole
    assert json.dumps(one_clip_metrics) == json.dumps(whole_metrics)  # NaN where no object

    clip_metrics, clipped = _results(cfg, model, 5)  # clips of frames 0-4, 3-7, 6-10, 9-11
    assert len(clipped) == len(whole) == 20
    assert all(len(p["segmentations"]) == 12 for p in clipped)
    assert all(math.isfinite(clip_metrics[k]) for k in ("AP", "AP50", "AR10"))
