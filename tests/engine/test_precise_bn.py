"""TEST.PRECISE_BN: the PreciseBN hook recomputes BatchNorm statistics before evaluation.

Expected statistics are computed here independently: the inputs of every BatchNorm layer on
the same batches, pooled (per channel: mean, and the variance with divisor n, which is what
fvcore's population estimator gives). Tolerance: rtol 1e-4, atol 1e-6 (float32 streaming
accumulation in fvcore against a float64 pooled reference on the same float32 inputs).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from mask2former.config import get_cfg
from mask2former.engine import DefaultTrainer, EvalHook, PreciseBN
from tests.engine.engine_toy import register_first_images

RTOL, ATOL = 1e-4, 1e-6
CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/mask2former_R18_quickstart.yaml"
VAL = "shapes_val_panoptic_with_sem_seg"


def bn_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers in training mode, by name (what precise BN updates)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    }


def bn_stats(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        name: (m.running_mean.clone(), m.running_var.clone())
        for name, m in bn_layers(model).items()
    }


@torch.no_grad()
def reference_stats(
    model: nn.Module, batches: list
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pooled per-channel mean and variance (divisor n) of the inputs of every BN layer in
    training mode over ``batches``, from forwards of a copy of ``model`` (its modes kept), in
    float64."""
    model = copy.deepcopy(model)
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in bn_layers(model)}

    def recorder(name: str):
        def hook(_module, args):
            x = args[0].detach().double()
            # (N, C, ...) -> (C, N * ...)
            inputs[name].append(x.transpose(0, 1).reshape(x.shape[1], -1))

        return hook

    handles = [m.register_forward_pre_hook(recorder(n)) for n, m in bn_layers(model).items()]
    for batch in batches:
        model(batch)
    for handle in handles:
        handle.remove()
    stats = {}
    for name, xs in inputs.items():
        pooled = torch.cat(xs, dim=1)
        stats[name] = (pooled.mean(1), pooled.var(1, unbiased=False))
    return stats


def assert_stats_close(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected) and actual
    for name, (mean, var) in expected.items():
        torch.testing.assert_close(actual[name][0].double(), mean, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(actual[name][1].double(), var, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- #
# The hook on a small model
# --------------------------------------------------------------------------- #
class BNNet(nn.Module):
    """Conv + BatchNorm2d, then Linear + BatchNorm1d; a frozen (eval-mode) BN is left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn2d = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.frozen = nn.BatchNorm1d(5).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn2d(self.conv(x))).mean((2, 3))
        return self.frozen(self.bn1d(self.fc(y)))


class FakeTrainer:
    def __init__(self, max_iter: int) -> None:
        self.iter, self.max_iter = 0, max_iter


def make_batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # batches of different sizes and offsets, so averaging per batch would differ from pooling
    return [torch.randn(2 + i, 3, 6, 7, generator=g) * (1 + i) + i for i in range(n)]


def test_precise_bn_statistics_equal_pooled_statistics_of_the_same_batches():
    torch.manual_seed(0)
    model = BNNet().train()
    model.frozen.eval()
    frozen_before = model.frozen.running_mean.clone()
    batches = make_batches(5)
    hook = PreciseBN(period=0, model=model, data_loader=batches, num_iter=3)
    hook.trainer = FakeTrainer(max_iter=4)
    expected_first = reference_stats(model, batches[:3])
    hook.trainer.iter = 3  # the last iteration: precise BN runs after it
    hook.after_step()
    assert_stats_close(bn_stats(model), expected_first)
    assert torch.equal(model.frozen.running_mean, frozen_before)  # eval-mode BN untouched
    assert model.bn2d.momentum == 0.1  # restored
    # pooled, not a mean of per-batch statistics: the batch sizes differ
    per_batch_mean = torch.stack([reference_stats(model, [b])["bn2d"][0] for b in batches[:3]])
    assert not torch.allclose(per_batch_mean.mean(0), expected_first["bn2d"][0], rtol=1e-3)


def test_precise_bn_runs_every_period_and_after_the_last_iteration():
    model = BNNet().train()
    batches = make_batches(40)
    hook = PreciseBN(period=2, model=model, data_loader=batches, num_iter=2)
    hook.trainer = FakeTrainer(max_iter=5)
    runs = []
    for it in range(5):
        hook.trainer.iter = it
        before = bn_stats(model)["bn1d"][0]
        hook.after_step()
        if not torch.equal(before, bn_stats(model)["bn1d"][0]):
            runs.append(it + 1)
    assert runs == [2, 4, 5]
    # one iterator over the loader: the third run used batches 4 and 5
    assert_stats_close(bn_stats(model), reference_stats(model, batches[4:6]))


def test_precise_bn_is_disabled_by_a_model_without_batch_norm_in_training_mode():
    """As detectron2's hook: decided when the hook is built (a model in eval mode, or with
    only frozen BN, has nothing to update); later train mode does not switch it on."""
    model = BNNet().eval()
    hook = PreciseBN(period=1, model=model, data_loader=make_batches(2), num_iter=2)
    hook.trainer = FakeTrainer(max_iter=1)
    model.train()
    before = bn_stats(model)
    hook.after_step()
    after = bn_stats(model)
    assert all(torch.equal(before[k][0], after[k][0]) for k in before)
    enabled = PreciseBN(period=1, model=model, data_loader=make_batches(2), num_iter=2)
    enabled.trainer = FakeTrainer(max_iter=1)
    enabled.after_step()
    assert not torch.equal(before["bn2d"][0], bn_stats(model)["bn2d"][0])


# --------------------------------------------------------------------------- #
# DefaultTrainer: the hook is built from TEST.PRECISE_BN and runs before evaluation
# --------------------------------------------------------------------------- #
def _cfg(tmp_path, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        ["SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "TEST.EVAL_PERIOD", 1]
        + ["TEST.PRECISE_BN.ENABLED", True, "TEST.PRECISE_BN.NUM_ITER", 2]
        + ["DATASETS.TEST", (register_first_images(VAL, 2),), "DATALOADER.NUM_WORKERS", 0]
        + ["MODEL.MASK_FORMER.DEC_LAYERS", 2, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 64]
        + ["OUTPUT_DIR", str(tmp_path), *opts]
    )
    return cfg


class RecordingLoader:
    """Iterates ``loader`` and keeps every batch it hands out."""

    def __init__(self, loader) -> None:
        self.loader, self.batches = loader, []

    def __iter__(self):
        for batch in self.loader:
            self.batches.append(batch)
            yield batch


class EvalRecordingTrainer(DefaultTrainer):
    """Records the BN statistics evaluation sees, and what each precise-BN run computed."""

    eval_stats: list[dict]

    def build_hooks(self):
        hooks = super().build_hooks()
        self.precise_bn = next(h for h in hooks if isinstance(h, PreciseBN))
        self.precise_bn._data_loader = RecordingLoader(self.precise_bn._data_loader)
        self.precise_bn_runs: list[tuple[nn.Module, int, dict]] = []
        update = self.precise_bn.update_stats

        def recorded_update() -> None:
            before = copy.deepcopy(self.model)  # the weights the statistics are computed with
            start = len(self.precise_bn._data_loader.batches)
            update()
            self.precise_bn_runs.append((before, start, bn_stats(self.model)))

        self.precise_bn.update_stats = recorded_update
        return hooks

    @classmethod
    def test(cls, cfg, model):
        cls.eval_stats.append(bn_stats(model))
        return OrderedDict()


@pytest.mark.slow
def test_trainer_runs_precise_bn_before_each_evaluation(tmp_path):
    """EVAL_PERIOD 1, MAX_ITER 2: precise BN after iterations 0 and 1, each followed by an
    evaluation that sees exactly those statistics, computed on the batches the hook drew."""
    torch.manual_seed(0)
    EvalRecordingTrainer.eval_stats = []
    trainer = EvalRecordingTrainer(_cfg(tmp_path))
    hook_types = [type(h) for h in trainer._trainer._hooks]
    assert hook_types.index(PreciseBN) < hook_types.index(EvalHook)
    trainer.resume_or_load(resume=False)
    trainer.train()
    runs, evals = trainer.precise_bn_runs, EvalRecordingTrainer.eval_stats
    assert len(runs) == len(evals) == 2
    batches = trainer.precise_bn._data_loader.batches
    assert len(batches) == 4  # NUM_ITER 2, twice, from one iterator
    for (before, start, after), seen in zip(runs, evals):
        assert_stats_close(after, reference_stats(before, batches[start : start + 2]))
        for name, (mean, var) in after.items():
            assert torch.equal(seen[name][0], mean) and torch.equal(seen[name][1], var)


def test_precise_bn_hook_only_when_enabled_and_the_model_has_batch_norm(tmp_path):
    def precise_bn_hooks(*opts) -> list:
        trainer = DefaultTrainer(_cfg(tmp_path, *opts))
        return [h for h in trainer._trainer._hooks if isinstance(h, PreciseBN)]

    assert len(precise_bn_hooks()) == 1  # the quick start's ResNet has BN layers
    assert precise_bn_hooks("TEST.PRECISE_BN.ENABLED", False) == []
    assert precise_bn_hooks("MODEL.RESNETS.NORM", "FrozenBN") == []
