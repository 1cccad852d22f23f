"""hooks.BestCheckpointer: detectron2's hook (same arguments), and SOLVER.BEST_CHECKPOINTER."""

import inspect
import itertools
import logging
import math

import pytest
import torch
from torch import nn

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.config import ConfigError
from mask2former.engine import hooks
from mask2former.engine.train_loop import SimpleTrainer
from tests.engine.engine_toy import ToyTrainer, toy_cfg


class OneWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": (self.w * batch).sum() ** 2}


class RecordingCheckpointer:
    """Records ``save(name, **extra)`` calls instead of writing."""

    def __init__(self) -> None:
        self.saves: list[tuple[str, dict]] = []

    def save(self, name: str, **extra) -> None:
        self.saves.append((name, extra))


def train_with_metrics(
    metrics, mode, checkpointer, period=10, max_iter=40, name="metric", **best_kwargs
):
    """Train ``max_iter`` steps; the evaluation every ``period`` iterations (and after the
    last) puts the next of ``metrics`` as ``name``; a BestCheckpointer watches ``metric``."""
    model = OneWeight()
    trainer = SimpleTrainer(
        model, itertools.repeat(torch.ones(1)), torch.optim.SGD(model.parameters(), 0.0)
    )
    values = iter(metrics)
    trainer.register_hooks(
        [
            hooks.EvalHook(period, lambda: {name: next(values)}),
            hooks.BestCheckpointer(
                eval_period=period,
                checkpointer=checkpointer,
                val_metric="metric",
                mode=mode,
                **best_kwargs,
            ),
        ]
    )
    trainer.train(0, max_iter)
    return trainer


@pytest.mark.parametrize(
    "mode, metrics, saved_at",
    [
        # evaluations after iterations 9, 19, 29 and 39 (the last, in after_train)
        ("max", [0.3, 0.4, 0.35, 0.5], [9, 19, 39]),
        ("min", [1.0, 0.8, 0.9, 0.9], [9, 19]),
        ("min", [math.nan, 0.8, 0.9, 0.9], [19]),  # NaN is never the best
        ("max", [0.5, math.inf, 0.4, 0.6], [9, 39]),  # nor infinity
        ("max", [0.5, 0.5, 0.5, 0.5], [9]),  # only a strictly better value saves
    ],
)
def test_saves_when_the_metric_improves_and_not_otherwise(mode, metrics, saved_at):
    checkpointer = RecordingCheckpointer()
    train_with_metrics(metrics, mode, checkpointer)
    assert checkpointer.saves == [("model_best", {"iteration": it}) for it in saved_at]


def test_a_missing_metric_logs_a_warning_naming_it(caplog):
    checkpointer = RecordingCheckpointer()
    with caplog.at_level(logging.WARNING, logger="mask2former.engine.hooks"):
        train_with_metrics([1.0] * 4, "max", checkpointer, name="other")
    assert checkpointer.saves == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("'metric' is not in the event storage" in w for w in warnings)
    assert "metrics there: data_time, other, total_loss" in warnings[0]


def test_signature_is_detectron2s():
    """Official-style code: hooks.BestCheckpointer(eval_period, checkpointer, val_metric,
    mode="max", file_prefix="model_best"), by position or keyword."""
    parameters = inspect.signature(hooks.BestCheckpointer).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        ("eval_period", inspect.Parameter.empty),
        ("checkpointer", inspect.Parameter.empty),
        ("val_metric", inspect.Parameter.empty),
        ("mode", "max"),
        ("file_prefix", "model_best"),
    ]
    checkpointer = RecordingCheckpointer()
    train_with_metrics([2.0, 1.0], "min", checkpointer, max_iter=20, file_prefix="best")
    assert checkpointer.saves == [("best", {"iteration": 9}), ("best", {"iteration": 19})]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='mode must be "max" or "min", got \'best\''):
        hooks.BestCheckpointer(10, RecordingCheckpointer(), "metric", mode="best")


def test_real_checkpointer_writes_model_best_and_tags_it_last_as_detectron2(tmp_path):
    """detectron2's hook saves through Checkpointer.save, which also writes last_checkpoint."""
    model = OneWeight()
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    trainer = train_with_metrics([0.3, 0.4, 0.35, 0.2], "max", checkpointer)
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert saved["iteration"] == 19 and torch.equal(saved["model"]["w"], model.w.detach())
    assert (tmp_path / "last_checkpoint").read_text() == "model_best.pth"
    hook = trainer._hooks[-1]
    assert (hook.best_metric, hook.best_iter) == (0.4, 19)


# --------------------------------------------------------------------------- #
# SOLVER.BEST_CHECKPOINTER
# --------------------------------------------------------------------------- #
def best_hooks(tmp_path, *opts) -> list[hooks.BestCheckpointer]:
    trainer = ToyTrainer(toy_cfg(str(tmp_path), list(opts)))
    return [h for h in trainer._trainer._hooks if isinstance(h, hooks.BestCheckpointer)]


def test_built_from_the_config_after_the_hooks_that_put_its_metric(tmp_path):
    assert best_hooks(tmp_path) == []  # off by default
    on = ["SOLVER.BEST_CHECKPOINTER.ENABLED", True, "TEST.EVAL_PERIOD", 3]
    (hook,) = best_hooks(tmp_path, *on, "SOLVER.BEST_CHECKPOINTER.METRIC", "toy/mse")
    assert hook._period == 3 and hook._compare(2, 1)  # evaluation period; "max"
    trainer = ToyTrainer(
        toy_cfg(
            str(tmp_path),
            on
            + ["SOLVER.BEST_CHECKPOINTER.METRIC", "val_total_loss", "TEST.VAL_LOSS.PERIOD", 2]
            + ["SOLVER.BEST_CHECKPOINTER.MODE", "min"],
        )
    )
    types = [type(h) for h in trainer._trainer._hooks]
    best = trainer._trainer._hooks[types.index(hooks.BestCheckpointer)]
    assert best._period == 2 and best._compare(1, 2)  # validation-loss period; "min"
    assert types.index(hooks.ValidationLoss) < types.index(hooks.EvalHook)
    assert types.index(hooks.EvalHook) < types.index(hooks.BestCheckpointer)
    assert types.index(hooks.BestCheckpointer) < types.index(hooks.PeriodicWriter)


@pytest.mark.parametrize(
    "opts, message",
    [
        ([], "SOLVER.BEST_CHECKPOINTER.ENABLED needs SOLVER.BEST_CHECKPOINTER.METRIC"),
        (
            ["SOLVER.BEST_CHECKPOINTER.METRIC", "toy/mse", "SOLVER.BEST_CHECKPOINTER.MODE", "up"],
            "SOLVER.BEST_CHECKPOINTER.MODE must be 'max' or 'min', got 'up'",
        ),
        (
            ["SOLVER.BEST_CHECKPOINTER.METRIC", "val_total_loss"],
            "'val_total_loss' is a validation loss, but TEST.VAL_LOSS.PERIOD is 0",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, opts, message):
    with pytest.raises(ConfigError, match=message):
        best_hooks(tmp_path, "SOLVER.BEST_CHECKPOINTER.ENABLED", True, *opts)
