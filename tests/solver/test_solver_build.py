"""Optimizer parameter groups, weight decay, gradient clipping and LR schedules.

Expected values are computed here from the published formulas, independently of fvcore.
"""

import math

import pytest
import torch
from torch import nn

from mask2former.config import ConfigError, check_supported, get_cfg
from mask2former.layers import LayerNorm2d
from mask2former.solver import build_lr_scheduler, build_optimizer


class SwinLikeBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.randn(9, 2))
        self.absolute_pos_embed = nn.Parameter(torch.randn(1, 4, 3))
        self.proj = nn.Linear(3, 3)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), SwinLikeBlock())
        self.backbone.add_module("ln2d", LayerNorm2d(4))
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GroupNorm(2, 4))
        self.query_embed = nn.Embedding(5, 4)
        self.level_embed = nn.Embedding(3, 4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.head[0]  # the same module twice: its parameters listed once


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.01
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.02
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _groups_by_name(optimizer):
    return {g["name"]: g for g in optimizer.param_groups}


def test_parameter_groups_lr_and_weight_decay():
    groups = _groups_by_name(build_optimizer(_cfg(), Model()))
    expected = {  # name: (lr, weight decay)
        "backbone.0.weight": (0.01, 0.05),
        "backbone.0.bias": (0.01, 0.05),
        "backbone.1.weight": (0.01, 0.01),
        "backbone.1.bias": (0.01, 0.01),
        # Mask2Former train_net.py build_optimizer: 0.0, whatever WEIGHT_DECAY_EMBED says
        "backbone.2.relative_position_bias_table": (0.01, 0.0),
        "backbone.2.absolute_pos_embed": (0.01, 0.0),
        "backbone.2.proj.weight": (0.01, 0.05),
        "backbone.2.proj.bias": (0.01, 0.05),
        # detectron2's "LN" layer is not among the published norm types: ordinary decay
        "backbone.ln2d.weight": (0.01, 0.05),
        "backbone.ln2d.bias": (0.01, 0.05),
        "head.0.weight": (0.1, 0.05),
        "head.0.bias": (0.1, 0.05),
        "head.1.weight": (0.1, 0.01),
        "head.1.bias": (0.1, 0.01),
        "head.2.weight": (0.1, 0.01),
        "head.2.bias": (0.1, 0.01),
        "query_embed.weight": (0.1, 0.02),
        "level_embed.weight": (0.1, 0.02),
    }
    assert set(groups) == set(expected)  # no frozen parameters, shared ones once
    for name, (lr, decay) in expected.items():
        assert groups[name]["lr"] == pytest.approx(lr), name
        assert groups[name]["weight_decay"] == pytest.approx(decay), name


def test_adamw_applies_decoupled_weight_decay_per_group():
    """With zero gradients AdamW only decays: p <- p * (1 - lr * wd)."""
    model = Model()
    optimizer = build_optimizer(_cfg(), model)
    assert type(optimizer) is torch.optim.AdamW
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    params = dict(model.named_parameters())
    for name, (lr, decay) in {
        "head.0.weight": (0.1, 0.05),
        "head.1.weight": (0.1, 0.01),
        "query_embed.weight": (0.1, 0.02),
        "backbone.0.weight": (0.01, 0.05),
    }.items():
        torch.testing.assert_close(params[name].detach(), before[name] * (1 - lr * decay))


@pytest.mark.parametrize("clip", [False, True])
def test_adamw_is_fused_on_a_cpu_with_the_plain_adamw_steps(clip):
    """The fused AdamW (one kernel per parameter) takes the plain AdamW's steps up to
    rounding, with and without full-model gradient clipping."""
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    fused_model, plain_model = Model(), Model()
    plain_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(cfg, fused_model)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(cfg, plain_model)
    for group in plain.param_groups:
        group["fused"] = None  # the published optimizer: the for-loop update
    before = {name: p.detach().clone() for name, p in fused_model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(fused_model.parameters(), plain_model.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for (name, p), q in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
        assert p.requires_grad is False or not torch.equal(p, before[name]), name


def test_adamw_is_not_fused_with_amp():
    """GradScaler leaves a fused optimizer's gradients scaled for its kernel to unscale; the
    clipping before it must see them unscaled, as published."""
    cfg = _cfg()
    cfg.SOLVER.AMP.ENABLED = True
    assert not build_optimizer(cfg, Model()).defaults["fused"]


def test_sgd_momentum_without_nesterov():
    """Mask2Former train_net.py: ``torch.optim.SGD(params, BASE_LR, momentum=MOMENTUM)``;
    SOLVER.NESTEROV is not read, so setting it is refused."""
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.8)
    optimizer = build_optimizer(cfg, Model())
    assert type(optimizer) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and not g["nesterov"] for g in optimizer.param_groups)
    with pytest.raises(ConfigError, match="SOLVER.NESTEROV = True is not supported"):
        check_supported(_cfg(OPTIMIZER="SGD", NESTEROV=True))


def _clip_model_and_step(clip_type: str, clip_value: float):
    """Two parameters with known gradients, SGD with lr 1 and no decay: p_new = p - clipped."""
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(2))
    model.b = nn.Parameter(torch.zeros(1))
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, BASE_LR=1.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    optimizer = build_optimizer(cfg, model)
    model.a.grad = torch.tensor([3.0, 4.0])  # norm 5
    model.b.grad = torch.tensor([12.0])  # norm 12; both together: 13
    optimizer.step()
    return -model.a.detach(), -model.b.detach(), optimizer


def test_full_model_clipping_scales_all_gradients_together():
    a, b, optimizer = _clip_model_and_step("full_model", 1.3)
    scale = 1.3 / 13.0
    torch.testing.assert_close(a, torch.tensor([3.0, 4.0]) * scale)
    torch.testing.assert_close(b, torch.tensor([12.0]) * scale)
    # the clipping subclass keeps the plain optimizer's state_dict format
    plain = torch.optim.SGD(
        [{"params": [nn.Parameter(torch.zeros(2))]}, {"params": [nn.Parameter(torch.zeros(1))]}],
        lr=1.0,
    )
    plain.load_state_dict(optimizer.state_dict())
    assert plain.param_groups[0]["name"] == "a"


def test_full_model_clipping_is_off_without_a_positive_value_and_uses_the_2_norm():
    """Mask2Former train_net.py maybe_add_full_model_gradient_clipping: enabled only when
    CLIP_VALUE > 0, ``clip_grad_norm_(all_params, CLIP_VALUE)`` (NORM_TYPE not read)."""
    a, b, _ = _clip_model_and_step("full_model", 0.0)
    torch.testing.assert_close(a, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(b, torch.tensor([12.0]))
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(2))
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, BASE_LR=1.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 1.0
    optimizer = build_optimizer(cfg, model)
    model.a.grad = torch.tensor([3.0, 4.0])  # 2-norm 5 (1-norm 7)
    optimizer.step()
    torch.testing.assert_close(-model.a.detach(), torch.tensor([3.0, 4.0]) / 5.0)


def test_per_parameter_norm_clipping():
    a, b, _ = _clip_model_and_step("norm", 2.5)
    torch.testing.assert_close(a, torch.tensor([3.0, 4.0]) * (2.5 / 5.0))
    torch.testing.assert_close(b, torch.tensor([2.5]))


def test_value_clipping():
    a, b, _ = _clip_model_and_step("value", 3.5)
    torch.testing.assert_close(a, torch.tensor([3.0, 3.5]))
    torch.testing.assert_close(b, torch.tensor([3.5]))


def test_no_clipping_when_disabled():
    model = nn.Linear(1, 1)
    optimizer = build_optimizer(_cfg(), model)
    assert type(optimizer) is torch.optim.AdamW


def test_bad_names_raise_config_errors():
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), Model())
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "elementwise"
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        build_optimizer(cfg, Model())
    optimizer = build_optimizer(_cfg(), Model())
    with pytest.raises(ConfigError, match="LR_SCHEDULER_NAME"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="WarmupStepLR"), optimizer)
    with pytest.raises(ConfigError, match="WARMUP_METHOD"):
        build_lr_scheduler(_cfg(WARMUP_METHOD="exp"), optimizer)


# --------------------------------------------------------------------------- #
# LR schedules
# --------------------------------------------------------------------------- #
BASE_LR, MAX_ITER, WARMUP_ITERS, WARMUP_FACTOR = 0.1, 100, 10, 0.01


def _lrs(name: str, **solver) -> list[float]:
    """LR of the head (multiplier 1) at iterations 0 .. MAX_ITER - 1."""
    cfg = _cfg(
        LR_SCHEDULER_NAME=name,
        BASE_LR=BASE_LR,
        MAX_ITER=MAX_ITER,
        WARMUP_ITERS=WARMUP_ITERS,
        WARMUP_FACTOR=WARMUP_FACTOR,
        **solver,
    )
    model = nn.Linear(1, 1)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _warmup(t: int, end_factor: float) -> float:
    """Linear warm-up from WARMUP_FACTOR * end to end (the schedule's value at WARMUP_ITERS)."""
    alpha = t / WARMUP_ITERS
    return BASE_LR * end_factor * (WARMUP_FACTOR * (1 - alpha) + alpha)


@pytest.mark.parametrize("t", [0, 1, 5, 9, 10, 39, 40, 41, 69, 70, 99])
def test_warmup_multistep_lr(t):
    lrs = _lrs("WarmupMultiStepLR", STEPS=(40, 70), GAMMA=0.1)
    expected = (
        _warmup(t, 1.0) if t < WARMUP_ITERS else BASE_LR * 0.1 ** sum(t >= s for s in (40, 70))
    )
    assert lrs[t] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("t", [0, 5, 10, 30, 50, 77, 99])
def test_warmup_cosine_lr(t):
    end = 0.001
    lrs = _lrs("WarmupCosineLR", BASE_LR_END=end)

    def cosine(i: int) -> float:
        return end + 0.5 * (BASE_LR - end) * (1 + math.cos(math.pi * i / MAX_ITER))

    expected = _warmup(t, cosine(WARMUP_ITERS) / BASE_LR) if t < WARMUP_ITERS else cosine(t)
    assert lrs[t] == pytest.approx(expected, rel=1e-9)


def _deeplab_poly(t: int, power: float = 0.9, ending: float = 0.0) -> float:
    """detectron2 projects/DeepLab/deeplab/lr_scheduler.py WarmupPolyLR.get_lr, rewritten:
    the warm-up factor multiplies the poly term of the same iteration."""
    warmup = 1.0 if t >= WARMUP_ITERS else WARMUP_FACTOR * (1 - t / WARMUP_ITERS) + t / WARMUP_ITERS
    poly = (1.0 - t / MAX_ITER) ** power
    if ending > 0 and warmup == 1.0 and poly < ending:
        return BASE_LR * ending
    return BASE_LR * warmup * poly


@pytest.mark.parametrize("t", [0, 1, 5, 9, 10, 50, 90, 99])
def test_warmup_poly_lr(t):
    lrs = _lrs("WarmupPolyLR", POLY_LR_POWER=0.9)
    assert lrs[t] == pytest.approx(_deeplab_poly(t), rel=1e-12)


def test_warmup_poly_lr_constant_ending_waits_for_the_warm_up():
    """During the warm-up DeepLab's schedule does not hold the constant ending."""
    lrs = _lrs("WarmupPolyLR", POLY_LR_POWER=50.0, POLY_LR_CONSTANT_ENDING=0.8)
    for t in (0, 3, 9, 10, 50, 99):
        assert lrs[t] == pytest.approx(_deeplab_poly(t, 50.0, 0.8), rel=1e-12), t
    assert lrs[5] < BASE_LR * 0.8 and lrs[10] == pytest.approx(BASE_LR * 0.8)


def test_poly_lr_constant_ending_and_no_warmup():
    """Published COCO setting: no warm-up; the poly factor is held once below the ending."""
    lrs = _lrs("WarmupPolyLR", POLY_LR_POWER=0.9, POLY_LR_CONSTANT_ENDING=0.2)
    for t in (50, 80, 90, 99):
        factor = (1 - t / MAX_ITER) ** 0.9
        expected = BASE_LR * max(factor, 0.2)
        assert lrs[t] == pytest.approx(expected, rel=1e-9)
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", BASE_LR=BASE_LR, MAX_ITER=MAX_ITER, WARMUP_ITERS=0)
    optimizer = build_optimizer(cfg, nn.Linear(1, 1))
    build_lr_scheduler(cfg, optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(BASE_LR)


def test_backbone_lr_follows_schedule_with_multiplier():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupMultiStepLR", MAX_ITER=20, WARMUP_ITERS=0, STEPS=(5,))
    optimizer = build_optimizer(cfg, Model())
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    groups = _groups_by_name(optimizer)
    assert groups["head.0.weight"]["lr"] == pytest.approx(0.1 * 0.1)
    assert groups["backbone.0.weight"]["lr"] == pytest.approx(0.1 * 0.1 * 0.1)


def test_scheduler_state_dict_resumes_the_same_lr():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", MAX_ITER=50, WARMUP_ITERS=5)
    model = nn.Linear(1, 1)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(17):
        optimizer.step()
        scheduler.step()
    state = (optimizer.state_dict(), scheduler.state_dict())
    expected = []
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        expected.append(optimizer.param_groups[0]["lr"])
    optimizer2 = build_optimizer(cfg, model)
    scheduler2 = build_lr_scheduler(cfg, optimizer2)
    optimizer2.load_state_dict(state[0])
    scheduler2.load_state_dict(state[1])
    resumed = []
    for _ in range(5):
        optimizer2.step()
        scheduler2.step()
        resumed.append(optimizer2.param_groups[0]["lr"])
    assert resumed == pytest.approx(expected, rel=1e-12)
