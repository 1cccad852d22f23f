"""The quick-start configs, shortened: the image one (``shapes``) trains a few iterations and
evaluates PQ, AP, mIoU; the video one (``ytvis_shapes``) trains a few iterations and evaluates
video AP.

The full runs (and their measured metrics and wall times) are in the README; these tests check
that the configs build, train through ``DefaultTrainer`` and that every evaluator reports.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from mask2former.config import get_cfg
from mask2former.engine import DefaultTrainer
from tests.engine.engine_toy import register_first_images

CONFIG = (
    Path(__file__).resolve().parents[2] / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"
)
VAL = "shapes_val_panoptic_with_sem_seg"
VIDEO_CONFIG = CONFIG.parents[1] / "ytvis_shapes" / "video_maskformer2_R18_quickstart.yaml"


@pytest.mark.slow
def test_quick_start_trains_and_evaluates(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        ["SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 2]
        + ["DATASETS.TEST", (register_first_images(VAL, 4),), "DATALOADER.NUM_WORKERS", 0]
        + ["OUTPUT_DIR", str(tmp_path)]
    )
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    for task, metric in (("panoptic_seg", "PQ"), ("segm", "AP"), ("sem_seg", "mIoU")):
        value = results[task][metric]
        assert math.isfinite(value) and 0.0 <= value <= 100.0, (task, metric, value)
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1, 2]
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert lines[-1]["panoptic_seg/PQ"] == pytest.approx(results["panoptic_seg"]["PQ"])
    checkpoint = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 2
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


@pytest.mark.slow
def test_video_quick_start_trains_and_evaluates(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(VIDEO_CONFIG))
    assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer" and cfg.MODEL.WEIGHTS == ""
    cfg.merge_from_list(
        ["SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 2]
        + ["DATASETS.TEST", (register_first_images("ytvis_shapes_val", 2),)]
        + ["DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(tmp_path)]
    )
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    for metric in ("AP", "AP50", "AP75", "AR1", "AR10"):
        value = results["segm"][metric]
        assert math.isfinite(value) and 0.0 <= value <= 100.0, (metric, value)
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1, 2]
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert lines[-1]["segm/AP"] == pytest.approx(results["segm"]["AP"])
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 2
