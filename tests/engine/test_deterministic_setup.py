"""``DETERMINISTIC``: default_setup turns on torch's deterministic algorithms (and refuses a
config that cannot be deterministic), and two training runs give the same weights bit for bit."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from mask2former.config import ConfigError, get_cfg
from mask2former.engine import DefaultTrainer, default_setup

QUICKSTART = (
    Path(__file__).resolve().parents[2] / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"
)


@pytest.fixture(autouse=True)
def restore_torch_settings(monkeypatch):
    """default_setup changes process-wide settings: each test starts without
    CUBLAS_WORKSPACE_CONFIG and leaves torch's flags as it found them."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    cudnn.deterministic, cudnn.benchmark = saved[2:]


def _cfg(output_dir: Path, *opts):
    """The quick-start config, smaller: three iterations of batches of two, two loader workers
    (random flips and crops), no evaluation."""
    cfg = get_cfg()
    cfg.merge_from_file(str(QUICKSTART))
    cfg.merge_from_list(
        ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.MASK_DIM", 32]
        + ["MODEL.MASK_FORMER.HIDDEN_DIM", 32, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64]
        + ["MODEL.MASK_FORMER.DEC_LAYERS", 3, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 6]
        + ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 64, "MODEL.RESNETS.WIDTH_PER_GROUP", 16]
        + ["INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", [48, 48]]
        + ["SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 100]
        + ["DATASETS.TEST", (), "DATALOADER.NUM_WORKERS", 2, "OUTPUT_DIR", str(output_dir)]
        + ["DETERMINISTIC", True, "SEED", 7, *opts]
    )
    return cfg


def _setup(cfg) -> None:
    default_setup(cfg, argparse.Namespace(eval_only=False))


def test_deterministic_turns_on_torchs_deterministic_algorithms(tmp_path):
    _setup(_cfg(tmp_path))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_deterministic_keeps_a_deterministic_cublas_config_and_refuses_another(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    _setup(_cfg(tmp_path))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG.*':0:0'"):
        _setup(_cfg(tmp_path))


def test_deterministic_false_leaves_torchs_settings():
    torch.use_deterministic_algorithms(False)
    cfg = get_cfg()
    cfg.OUTPUT_DIR = ""
    _setup(cfg)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SEED", -1], "DETERMINISTIC True needs a fixed seed: SEED = -1"),
        (["CUDNN_BENCHMARK", True], "DETERMINISTIC True needs CUDNN_BENCHMARK False"),
    ],
)
def test_deterministic_refuses_a_random_seed_and_cudnn_autotuning(tmp_path, opts, message):
    output_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        _setup(_cfg(output_dir, *opts))
    assert not output_dir.exists()  # refused before writing anything
    assert not torch.are_deterministic_algorithms_enabled()


def _train(output_dir: Path, *opts) -> dict[str, torch.Tensor]:
    """Weights after the run of tools/train_net.py (default_setup, DefaultTrainer)."""
    cfg = _cfg(output_dir, *opts)
    cfg.freeze()
    _setup(cfg)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_two_deterministic_runs_give_the_same_weights(tmp_path):
    """Through the trainer, with two loader workers; a third run with another SEED shows that
    the weights depend on the seed (model initialisation, augmentations, loss points)."""
    first, second = _train(tmp_path / "a"), _train(tmp_path / "b")
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert different == [], f"weights differ between two runs: {different[:5]}"
    other = _train(tmp_path / "c", "SEED", 8)
    assert any(not torch.equal(first[k], other[k]) for k in first)
