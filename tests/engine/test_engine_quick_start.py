"""The shapes quick-start config, shortened: trains a few iterations and evaluates PQ, AP, mIoU.

The full run (and its measured metrics and wall time) is in the README; this test checks that
the config builds, trains through ``DefaultTrainer`` and that every evaluator reports.
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
