"""Video instance segmentation through ``DefaultTrainer``: a tiny ``VideoMaskFormer`` from the
published YouTube-VIS config trains on ``ytvis_shapes`` clips and is evaluated per video."""

import json
import math

import torch

from mask2former.data import DatasetCatalog
from mask2former.engine import DefaultTrainer
from mask2former.evaluation import YTVISEvaluator
from tests.engine.engine_toy import register_first_images
from tests.modeling.tiny import tiny_video_cfg

VIDEO_AP_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"}
NUM_VAL_VIDEOS = 2


def tiny_video_training_cfg(output_dir):
    """The published config, as :func:`tiny_video_cfg` shrinks it, on ytvis_shapes (3 classes,
    64x85 frames), with nothing but the datasets naming what is video about the data."""
    cfg = tiny_video_cfg(MODEL__SEM_SEG_HEAD__NUM_CLASSES=3)
    val = register_first_images("ytvis_shapes_val", NUM_VAL_VIDEOS)
    cfg.merge_from_list(
        ["DATASETS.TRAIN", ("ytvis_shapes_train",), "DATASETS.TEST", (val,)]
        + ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 96]
        + ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96]
        + ["SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.AMP.ENABLED", False]
        + ["DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(output_dir)]
    )
    return cfg


def test_tiny_video_model_trains_and_reports_video_ap(tmp_path):
    cfg = tiny_video_training_cfg(tmp_path)
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"  # as published: not set
    val = cfg.DATASETS.TEST[0]
    (video,) = next(iter(DefaultTrainer.build_test_loader(cfg, val)))  # one whole video
    assert len(video["image"]) == video["length"] == 12 and "instances" not in video
    clip, _ = next(iter(DefaultTrainer.build_train_loader(cfg)))
    assert len(clip["image"]) == len(clip["instances"]) == cfg.INPUT.SAMPLING_FRAME_NUM
    assert isinstance(DefaultTrainer.build_evaluator(cfg, val), YTVISEvaluator)

    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1]
    metrics = results["segm"]
    assert VIDEO_AP_KEYS | {"AP-disc", "AP-square", "AP-triangle"} <= set(metrics)
    for key in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 100.0, key
    # the evaluator got VideoMaskFormer's per-video outputs: its top 10 instances, one mask per
    # frame, for each evaluated video
    predictions = json.loads((tmp_path / "inference" / val / "results.json").read_text())
    videos = DatasetCatalog.get(val)
    assert len(predictions) == 10 * NUM_VAL_VIDEOS
    lengths = {v["video_id"]: v["length"] for v in videos}
    for prediction in predictions:
        assert len(prediction["segmentations"]) == lengths[prediction["video_id"]]
        assert prediction["category_id"] in (1, 2, 3)  # dataset ids
