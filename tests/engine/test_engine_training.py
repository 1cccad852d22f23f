"""Trainer, hooks, checkpoints and writers on a toy model (see engine_toy.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.engine.train_loop import check_grads_finite, check_losses_finite
from tests.engine.engine_toy import ToyTrainer, toy_cfg

REPO = Path(__file__).resolve().parents[2]
TOY_SCRIPT = Path(__file__).with_name("engine_toy.py")


def _env(output_dir, **extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOY_OUTPUT_DIR": str(output_dir)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run_toy(output_dir, *args, timeout=120, **env):
    return subprocess.run(
        [sys.executable, str(TOY_SCRIPT), *args],
        env=_env(output_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _final_params(output_dir, name="model_final.pth"):
    return torch.load(Path(output_dir) / name, map_location="cpu", weights_only=False)["model"]


def _train_in_process(tmp_path, *opts):
    torch.manual_seed(0)
    trainer = ToyTrainer(toy_cfg(str(tmp_path), list(opts)))
    trainer.resume_or_load(resume=False)
    return trainer, trainer.train()


# --------------------------------------------------------------------------- #
# NaN / inf losses
# --------------------------------------------------------------------------- #
def test_check_losses_finite_names_iteration_and_terms():
    check_losses_finite({"a": torch.tensor(1.0)}, 3)
    with pytest.raises(FloatingPointError, match=r"iteration 12.*loss_ce=1\.5.*loss_mask=inf"):
        check_losses_finite(
            {"loss_mask": torch.tensor(float("inf")), "loss_ce": torch.tensor(1.5)}, 12
        )


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_NAN_ITER", "4")
    with pytest.raises(FloatingPointError, match=r"iteration 4.*loss_mse=nan"):
        _train_in_process(tmp_path)
    # checkpoints after iterations 1 and 3; none for 4 and no model_final
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (tmp_path / "model_final.pth").exists()
    checkpoint = torch.load(tmp_path / "model_0000003.pth", weights_only=False)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v.float()).all() for v in checkpoint["model"].values())
    # the failing step did not update the parameters either: resuming works from 3
    monkeypatch.delenv("TOY_NAN_ITER")
    torch.manual_seed(0)
    trainer = ToyTrainer(toy_cfg(str(tmp_path)))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4


def _assert_finite_checkpoint(path):
    model = torch.load(path, weights_only=False)["model"]
    bad = [k for k, v in model.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"{path}: non-finite {bad}"


def test_check_grads_finite_names_iteration_parameters_and_losses():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    losses = {"loss_ce": torch.tensor(2.5), "loss_mask": torch.tensor(1e30)}
    check_grads_finite(model, losses, 3)  # no gradients yet
    for p in model.parameters():
        p.grad = torch.full_like(p, 3e38)  # finite, though a 2-norm of them overflows
    check_grads_finite(model, losses, 3)
    model[1].weight.grad[0, 1] = float("-inf")
    model[0].bias.grad[0] = float("nan")
    with pytest.raises(
        FloatingPointError,
        match=r"iteration 7.*non-finite gradients: 0\.bias, 1\.weight\..*"
        r"loss_ce=2\.5, loss_mask=1e\+30.*SOLVER\.BASE_LR.*SOLVER\.CLIP_GRADIENTS.*WARMUP_ITERS",
    ):
        check_grads_finite(model, losses, 7)


def test_matcher_error_in_forward_names_the_iteration():
    """Diverged weights give non-finite predictions: the matcher raises before any loss."""
    from mask2former.engine.train_loop import SimpleTrainer
    from mask2former.modeling.matcher import HungarianMatcher

    class Diverged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.tensor(float("nan")))

        def forward(self, batch):
            outputs = {
                "pred_logits": self.logit.expand(1, 2, 3),
                "pred_masks": self.logit.expand(1, 2, 4, 4),
            }
            targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}]
            HungarianMatcher(num_points=16)(outputs, targets)
            return {"loss": self.logit}

    model = Diverged()
    trainer = SimpleTrainer(model, [None] * 10, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(
        FloatingPointError,
        match=r"^Iteration 4: HungarianMatcher: .*predictions are non-finite.*diverged.*"
        r"Training stopped before the optimizer step.*SOLVER\.BASE_LR",
    ):
        trainer.train(4, 6)


def test_nan_gradient_stops_before_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """The loss is finite at iteration 5 but a gradient is NaN: without the check the step
    made the weights NaN and the checkpoint taken after iteration 5 saved them."""
    monkeypatch.setenv("TOY_NAN_GRAD_ITER", "5")
    with pytest.raises(
        FloatingPointError, match=r"Gradients .* iteration 5 .*query_embed\.weight.*loss_l1="
    ):
        _train_in_process(tmp_path)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (tmp_path / "model_0000005.pth").exists()
    _assert_finite_checkpoint(tmp_path / "model_0000003.pth")


def test_float16_amp_skips_inf_gradients_bfloat16_stops(tmp_path, monkeypatch):
    """With a GradScaler, non-finite gradients are expected: the scaler skips that step."""
    fp16 = ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16"]
    clean, _ = _train_in_process(tmp_path / "clean", *fp16)
    monkeypatch.setenv("TOY_NAN_GRAD_ITER", "5")
    injected, _ = _train_in_process(tmp_path / "fp16", *fp16)
    # one more skipped step than the same run without the NaN gradient: the scale halved once
    assert injected._trainer.grad_scaler.get_scale() == clean._trainer.grad_scaler.get_scale() / 2
    _assert_finite_checkpoint(tmp_path / "fp16" / "model_final.pth")
    bf16 = ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16"]
    with pytest.raises(FloatingPointError, match=r"Gradients .* iteration 5 "):
        _train_in_process(tmp_path / "bf16", *bf16)


def test_diverging_lr_keeps_finite_checkpoint_and_resumes_at_a_sane_lr(tmp_path):
    """LR 1e8 after a 4-iteration warm-up at 0.01: the run stops at the first non-finite
    gradient; the last checkpoint is finite and a resumed run uses the lower SOLVER.BASE_LR.

    Before: the step of iteration 5 made 5 tensors NaN, model_0000005 saved them, the loss of
    iteration 6 was NaN, and a resume kept the checkpoint's LR of 1e8.
    """
    diverging = ["SOLVER.BASE_LR", 1e8, "SOLVER.WARMUP_METHOD", "constant"]
    diverging += ["SOLVER.WARMUP_FACTOR", 1e-10, "SOLVER.WARMUP_ITERS", 4]
    with pytest.raises(FloatingPointError, match=r"iteration 5 .*loss_l1=.*loss_mse="):
        _train_in_process(tmp_path, *diverging)
    last = (tmp_path / "last_checkpoint").read_text()
    assert last == "model_0000003.pth"
    _assert_finite_checkpoint(tmp_path / last)

    torch.manual_seed(0)
    trainer = ToyTrainer(toy_cfg(str(tmp_path), ["SOLVER.BASE_LR", 0.01]))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    trainer.train()
    lrs = [lr for lr, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 0.001])  # iterations 4..7, step at 5
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    _assert_finite_checkpoint(tmp_path / "model_final.pth")


def test_checkpointer_refuses_non_finite_model_and_keeps_last_checkpoint(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    checkpointer = DetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    with torch.no_grad():
        model[0].weight[1, 0] = float("inf")
    model[1].running_var[0] = float("nan")
    with pytest.raises(
        FloatingPointError,
        match=r"model_0000003\.pth \(iteration 3\): 2 of 7 model tensors .*0\.weight, 1\.running_var",
    ):
        checkpointer.save("model_0000003", iteration=3)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before


# --------------------------------------------------------------------------- #
# Checkpoint contents and atomic writes
# --------------------------------------------------------------------------- #
def test_checkpoint_holds_model_optimizer_scheduler_scaler_iteration(tmp_path):
    trainer, _ = _train_in_process(
        tmp_path, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16"
    )
    checkpoint = torch.load(tmp_path / "model_0000005.pth", weights_only=False)
    assert {"model", "optimizer", "scheduler", "grad_scaler", "iteration", "rng_states"} <= set(
        checkpoint
    )
    assert checkpoint["iteration"] == 5
    assert checkpoint["scheduler"]["last_epoch"] == 6  # stepped after iterations 0..5
    assert checkpoint["grad_scaler"]["scale"] > 0
    assert len(checkpoint["optimizer"]["state"]) == sum(1 for _ in trainer.model.parameters())
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_failed_checkpoint_write_leaves_previous_untouched(tmp_path, monkeypatch):
    checkpointer = DetectionCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def fail_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000001", iteration=3)  # overwriting the same name
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_sigkill_during_checkpoint_write_keeps_previous_loadable(tmp_path):
    child = textwrap.dedent(f"""
        import sys, time, torch
        from mask2former.checkpoint import DetectionCheckpointer
        model = torch.nn.Linear(200, 200)
        checkpointer = DetectionCheckpointer(model, {str(tmp_path)!r})
        checkpointer.save("model_0000001", iteration=1)

        def slow_save(obj, f, *args, **kwargs):
            f.write(b"half a checkpoint")
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)

        torch.save = slow_save
        checkpointer.save("model_0000003", iteration=3)
        """)
    proc = subprocess.Popen(
        [sys.executable, "-c", child], env=_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    checkpointer = DetectionCheckpointer(torch.nn.Linear(200, 200), str(tmp_path))
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
    # the killed write's partial file stays until the next save removes it
    (partial,) = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert partial.startswith(".model_0000003.pth.")
    checkpointer.save("model_0000004", iteration=4)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000001.pth",
        "model_0000004.pth",
    ]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    """Dropout (RNG state), AdamW moments, LR schedule and grad scaler all carry over."""
    opts = ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "float16"]
    full = _run_toy(tmp_path / "full", *opts)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run_toy(tmp_path / "killed", *opts, TOY_KILL_ITER=5)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "last_checkpoint").read_text() == "model_0000003.pth"
    resumed = _run_toy(tmp_path / "killed", "--resume", *opts)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming at iteration 4" in resumed.stdout
    expected, actual = _final_params(tmp_path / "full"), _final_params(tmp_path / "killed")
    for name in expected:  # same operations in the same order: equal up to float rounding
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    expected_metrics = torch.load(tmp_path / "full" / "results_1.pth", weights_only=False)
    actual_metrics = torch.load(tmp_path / "killed" / "results_1.pth", weights_only=False)
    assert actual_metrics["toy"]["mse"] == pytest.approx(expected_metrics["toy"]["mse"], abs=1e-5)


# --------------------------------------------------------------------------- #
# Writers and AMP
# --------------------------------------------------------------------------- #
def test_writers_json_tensorboard_console(tmp_path, caplog):
    caplog.set_level("INFO")
    _, results = _train_in_process(tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    train_line = next(line for line in lines if line["iteration"] == 7 and "total_loss" in line)
    assert train_line["total_loss"] == pytest.approx(train_line["loss_mse"] + train_line["loss_l1"])
    assert train_line["lr"] == pytest.approx(0.01 * 0.1)  # after the step at 5
    eval_line = lines[-1]
    assert eval_line["toy/mse"] == pytest.approx(results["toy"]["mse"])
    assert "eta: " in caplog.text and "iter: 7" in caplog.text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    steps = {e.step: e.value for e in events.Scalars("total_loss")}
    assert steps[7] == pytest.approx(train_line["total_loss"], rel=1e-6)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_amp_trainer_trains(tmp_path, precision):
    trainer, _ = _train_in_process(
        tmp_path, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", precision
    )
    assert trainer._trainer.precision == getattr(torch, precision)
    assert (trainer._trainer.grad_scaler is not None) == (precision == "float16")
    history = trainer.storage.history("total_loss").values()
    assert history[-1][0] < history[0][0]  # the loss went down


def test_auto_scale_workers_linear_scaling_rule():
    from mask2former.config import get_cfg
    from mask2former.engine.defaults import auto_scale_workers

    cfg = get_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.0001
    cfg.SOLVER.MAX_ITER = 1000
    cfg.SOLVER.STEPS = (600, 800)
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.TEST.EVAL_PERIOD = 100
    cfg.TEST.VAL_LOSS.PERIOD = 50
    cfg.freeze()
    scaled = auto_scale_workers(cfg, 2)
    assert scaled.SOLVER.IMS_PER_BATCH == 4  # still 2 images per process
    assert scaled.SOLVER.BASE_LR == pytest.approx(0.000025)
    assert scaled.SOLVER.MAX_ITER == 4000 and scaled.SOLVER.STEPS == (2400, 3200)
    assert scaled.SOLVER.WARMUP_ITERS == 40 and scaled.TEST.EVAL_PERIOD == 400
    assert scaled.TEST.VAL_LOSS.PERIOD == 200
    assert scaled.is_frozen() and cfg.SOLVER.MAX_ITER == 1000  # the input is untouched
    assert auto_scale_workers(cfg, 8) is cfg
