"""hooks.ValidationLoss and TEST.VAL_LOSS: training losses on validation data, logged with the
training curves, without changing the model or the training's random draws.

Tolerances: the hook's mean of per-batch losses against the same mean computed here from an
eval-mode forward: 1e-6 relative (the same float32 operations, summed in another order).
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mask2former.config import ConfigError, get_cfg
from mask2former.engine import DefaultTrainer, hooks
from mask2former.engine.hooks import ValidationLoss, loss_mode
from mask2former.engine.rng import isolated_rng
from mask2former.modeling.backbone.swin import DropPath
from mask2former.utils.events import EventStorage
from tests.engine.engine_toy import EngineToyModel, ToyTrainer, register_first_images, toy_cfg
from tests.engine.test_engine_training import _run_toy

CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/mask2former_R18_quickstart.yaml"


class FakeTrainer:
    def __init__(self, max_iter: int) -> None:
        self.iter, self.max_iter = 0, max_iter
        self.storage = EventStorage()


def toy_batches(n: int, size: int = 2, seed: int = 0) -> list[list[dict]]:
    g = torch.Generator().manual_seed(seed)
    return [
        [{"x": torch.randn(6, generator=g), "y": torch.randn(1, generator=g), "iteration": None}]
        * size
        for _ in range(n)
    ]


def trained_toy_model() -> EngineToyModel:
    """The toy model with BatchNorm statistics away from their initial values."""
    torch.manual_seed(0)
    model = EngineToyModel().train()
    with torch.no_grad():
        for batch in toy_batches(3, size=4, seed=1):
            model(batch)
    return model


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- #
# loss_mode
# --------------------------------------------------------------------------- #
class Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.frozen_bn = nn.BatchNorm1d(4)
        self.dropout = nn.Dropout(0.5)
        self.attn = nn.MultiheadAttention(4, 2, dropout=0.5)
        self.drop_path = DropPath(0.5)
        self.linear = nn.Linear(4, 4)


def test_loss_mode_keeps_the_model_training_but_normalisation_and_random_layers_in_eval():
    model = Layers().eval()
    model.linear.train()
    before = {name: m.training for name, m in model.named_modules()}
    with loss_mode(model):
        modes = {name: m.training for name, m in model.named_modules()}
    assert modes[""] and modes["linear"]  # the model returns its losses
    for name in ("bn", "frozen_bn", "dropout", "attn", "drop_path"):
        assert not modes[name], name
    assert {name: m.training for name, m in model.named_modules()} == before  # restored


# --------------------------------------------------------------------------- #
# The hook
# --------------------------------------------------------------------------- #
def expected_losses(model: EngineToyModel, batches: list) -> dict[str, float]:
    """The toy model's losses with BatchNorm statistics and without dropout: its eval-mode
    prediction, scored here."""
    model = copy.deepcopy(model).eval()
    sums = {"val_loss_mse": 0.0, "val_loss_l1": 0.0}
    with torch.no_grad():
        for batch in batches:
            error = model(batch) - torch.stack([d["y"] for d in batch])
            sums["val_loss_mse"] += float((error**2).mean())
            sums["val_loss_l1"] += float(0.1 * error.abs().mean())
    means = {k: v / len(batches) for k, v in sums.items()}
    return {**means, "val_total_loss": sum(means.values())}


def test_puts_the_mean_losses_and_leaves_parameters_and_buffers_unchanged():
    model = trained_toy_model()
    before = state(model)
    batches = toy_batches(5)
    hook = ValidationLoss(period=2, model=model, data_loader=batches, num_iter=3)
    hook.trainer = FakeTrainer(max_iter=10)
    hook.trainer.iter = hook.trainer.storage.iter = 1  # the second iteration: a period ends
    hook.after_step()
    latest = hook.trainer.storage.latest()
    expected = expected_losses(model, batches[:3])  # NUM_ITER 3 of the 5 batches
    assert set(latest) == set(expected)
    for name, value in expected.items():
        assert latest[name] == (pytest.approx(value, rel=1e-6), 1)
        assert torch.isfinite(torch.tensor(latest[name][0]))
    after = state(model)
    assert after.keys() == before.keys()
    for name in before:  # BatchNorm running statistics and num_batches_tracked included
        assert torch.equal(after[name], before[name]), name
    assert model.training and model.dropout.training and model.backbone[1].training


def test_runs_every_period_and_after_the_last_iteration():
    hook = ValidationLoss(period=3, model=trained_toy_model(), data_loader=toy_batches(2))
    hook.trainer = FakeTrainer(max_iter=7)
    runs = []
    for it in range(7):
        hook.trainer.iter = hook.trainer.storage.iter = it
        hook.after_step()
        if hook.trainer.storage.latest().get("val_total_loss", (None, None))[1] == it:
            runs.append(it)
    assert runs == [2, 5, 6]


class RandomLoader:
    """Batches whose targets are drawn from the global generator (as random augmentations
    are), in a fixed number."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield [{"x": torch.randn(6), "y": torch.randn(1), "iteration": None} for _ in range(2)]


def test_same_value_every_time_and_the_training_draws_are_unchanged():
    hook = ValidationLoss(period=1, model=trained_toy_model(), data_loader=RandomLoader(3))
    hook.trainer = FakeTrainer(max_iter=5)
    torch.manual_seed(5)
    first = hook.compute()
    draw_after = torch.rand(3)
    second = hook.compute()
    assert first == second  # the same random batches: a curve of the model, not of the draws
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), draw_after)  # as if the hook had not run


def test_isolated_rng_seeds_inside_and_restores_outside():
    torch.manual_seed(1)
    expected_outside = torch.rand(2)
    torch.manual_seed(1)
    with isolated_rng(7):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(2), expected_outside)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(2), inside)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="period must be positive, got 0"):
        ValidationLoss(period=0, model=nn.Linear(1, 1), data_loader=[])
    with pytest.raises(ValueError, match="num_iter must be >= 0"):
        ValidationLoss(period=1, model=nn.Linear(1, 1), data_loader=[], num_iter=-1)
    hook = ValidationLoss(period=1, model=trained_toy_model(), data_loader=[])
    with pytest.raises(ValueError, match="a process has no validation batch"):
        hook.compute()


# --------------------------------------------------------------------------- #
# TEST.VAL_LOSS and SOLVER.BEST_CHECKPOINTER in training
# --------------------------------------------------------------------------- #
def read_metrics(output_dir) -> list[dict]:
    return [
        json.loads(line) for line in (Path(output_dir) / "metrics.json").read_text().splitlines()
    ]


BOTH_ON = ["TEST.VAL_LOSS.PERIOD", 20, "SOLVER.BEST_CHECKPOINTER.ENABLED", True]
BOTH_ON += ["SOLVER.BEST_CHECKPOINTER.METRIC", "val_total_loss"]
BOTH_ON += ["SOLVER.BEST_CHECKPOINTER.MODE", "min"]
# 50 iterations, so that the writers (every 20 iterations) write each validation loss
LONGER = ["SOLVER.MAX_ITER", 50, "SOLVER.CHECKPOINT_PERIOD", 50, "SOLVER.STEPS", (30,)]


def test_toy_training_logs_val_losses_and_keeps_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = ToyTrainer(toy_cfg(str(tmp_path), BOTH_ON + LONGER))
    trainer.resume_or_load(resume=False)
    trainer.train()
    lines = {line["iteration"]: line for line in read_metrics(tmp_path)}
    val = {it: lines[it]["val_total_loss"] for it in (19, 39, 49)}  # every 20 and the last
    assert [it for it, line in lines.items() if "val_total_loss" in line] == [19, 39, 49]
    for it in val:
        terms = lines[it]["val_loss_mse"] + lines[it]["val_loss_l1"]
        assert lines[it]["val_total_loss"] == pytest.approx(terms, rel=1e-6)
    assert len(set(val.values())) == 3  # the model changed between them
    best = min(val, key=val.get)
    saved = torch.load(tmp_path / "model_best.pth", weights_only=False)
    assert saved["iteration"] == best
    # the loss is the one of the saved weights: recomputed from them, it is the logged value
    model = EngineToyModel()
    model.load_state_dict(saved["model"])
    recomputed = ValidationLoss(1, model, ToyTrainer.build_val_loss_loader(trainer.cfg))
    recomputed.trainer = FakeTrainer(max_iter=1)
    assert recomputed.compute()["val_total_loss"] == pytest.approx(val[best], rel=1e-6)


def test_validation_loss_does_not_change_the_training(tmp_path):
    """Dropout draws from the global generator: the hook's draws must not shift them."""
    torch.manual_seed(0)
    plain = ToyTrainer(toy_cfg(str(tmp_path / "plain")))
    plain.resume_or_load(resume=False)
    plain.train()
    torch.manual_seed(0)
    with_val = ToyTrainer(toy_cfg(str(tmp_path / "val"), ["TEST.VAL_LOSS.PERIOD", 2]))
    with_val.resume_or_load(resume=False)
    with_val.train()
    for (name, a), b in zip(plain.model.state_dict().items(), with_val.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"TEST.VAL_LOSS.PERIOD \(-1\) and NUM_ITER"):
        ToyTrainer(toy_cfg(str(tmp_path), ["TEST.VAL_LOSS.PERIOD", -1]))
    cfg = get_cfg()
    cfg.DATASETS.TEST = ()
    with pytest.raises(ConfigError, match="TEST.VAL_LOSS.DATASETS or DATASETS.TEST"):
        DefaultTrainer.build_val_loss_loader(cfg)


@pytest.mark.slow
def test_quickstart_model_with_both_keys_writes_val_losses_and_model_best(tmp_path):
    """The real path: the training mapper on the validation images, the Mask2Former criterion."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    val = register_first_images("shapes_val_panoptic_with_sem_seg", 2)
    cfg.merge_from_list(
        ["SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 1, "DATALOADER.NUM_WORKERS", 0]
        + ["DATASETS.TEST", (val,), "MODEL.MASK_FORMER.DEC_LAYERS", 2]
        + ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 64, "OUTPUT_DIR", str(tmp_path)]
        + ["TEST.VAL_LOSS.PERIOD", 1, "SOLVER.BEST_CHECKPOINTER.ENABLED", True]
        + ["SOLVER.BEST_CHECKPOINTER.METRIC", "val_total_loss"]
        + ["SOLVER.BEST_CHECKPOINTER.MODE", "min"]
    )
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    (val_hook,) = [h for h in trainer._trainer._hooks if isinstance(h, hooks.ValidationLoss)]
    assert len(val_hook._data_loader) == 2  # the two validation images, one per batch
    trainer.resume_or_load(resume=False)
    trainer.train()
    # after iterations 0 and 1; the writers wrote the last (they keep the latest value)
    history = trainer.storage.history("val_total_loss").values()
    assert [it for _, it in history] == [0, 1]
    (line,) = [line for line in read_metrics(tmp_path) if "val_total_loss" in line]
    assert line["iteration"] == 1 and line["val_total_loss"] == history[-1][0]
    terms = {k: v for k, v in line.items() if k.startswith("val_loss_")}
    assert {"val_loss_ce", "val_loss_mask", "val_loss_dice", "val_loss_ce_0"} <= set(terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert line["val_total_loss"] == pytest.approx(sum(terms.values()), rel=1e-6)
    best = min(history)[1]
    assert torch.load(tmp_path / "model_best.pth", weights_only=False)["iteration"] == best


@pytest.mark.slow
def test_two_processes_average_over_all_validation_batches(tmp_path, monkeypatch):
    """Each process takes half the validation batches; the logged means are those of one
    process over all of them (to float32 rounding of data-parallel training, 1e-5)."""
    opts = ["TEST.VAL_LOSS.PERIOD", 20, "SOLVER.MAX_ITER", 40, "SOLVER.CHECKPOINT_PERIOD", 40]
    monkeypatch.setenv("TOY_DROPOUT", "0")  # dropout masks differ per process by design
    torch.manual_seed(0)
    single = ToyTrainer(toy_cfg(str(tmp_path / "one"), opts))
    single.resume_or_load(resume=False)
    single.train()
    result = _run_toy(tmp_path / "two", "--num-gpus", "2", *map(str, opts), TOY_DROPOUT=0)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {line["iteration"]: line for line in read_metrics(tmp_path / "one")}
    actual = {line["iteration"]: line for line in read_metrics(tmp_path / "two")}
    for it in (19, 39):
        for name in ("val_loss_mse", "val_loss_l1", "val_total_loss"):
            assert actual[it][name] == pytest.approx(expected[it][name], abs=1e-5), (it, name)
