"""Optimizer (parameter groups, gradient clipping) and LR scheduler built from the config.

``build_optimizer(cfg, model)`` returns an AdamW or SGD optimizer whose parameter groups carry
the published Mask2Former rules (``train_net.py`` ``Trainer.build_optimizer``): the backbone's
learning rate is scaled by ``SOLVER.BACKBONE_MULTIPLIER``; normalisation layers get
``SOLVER.WEIGHT_DECAY_NORM``; embeddings (``nn.Embedding``, e.g. query and level embeddings)
get ``SOLVER.WEIGHT_DECAY_EMBED``; Swin's ``relative_position_bias_table`` /
``absolute_pos_embed`` get no weight decay. ``build_lr_scheduler(cfg, optimizer)`` returns an
:class:`LRMultiplier` driven by fvcore param schedulers: detectron2's multi-step and cosine
schedules, and DeepLab's ``WarmupPolyLR`` (the published code imports
``detectron2.projects.deeplab.build_lr_scheduler``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

from ..config import CfgNode, ConfigError

logger = logging.getLogger(__name__)

# The published build_optimizer's list. detectron2's channel-first LayerNorm (NORM "LN", our
# LayerNorm2d) is not in it, so its parameters get SOLVER.WEIGHT_DECAY there, and here.
NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
# Parameters (by the last component of their name) that get no weight decay: Swin's position
# tables, set to 0.0 in the published build_optimizer whatever SOLVER.WEIGHT_DECAY_EMBED says.
NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


# --------------------------------------------------------------------------- #
# Parameter groups
# --------------------------------------------------------------------------- #
def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> list[dict[str, Any]]:
    """One group per trainable parameter, with its own ``lr`` and ``weight_decay``.

    A parameter shared by several modules is listed once (under its first owner). Each group
    also has ``"name"`` (the parameter's qualified name) so logs and tests can find it.
    """
    norm_types = NORM_MODULE_TYPES
    seen: set[int] = set()
    groups = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * (backbone_multiplier if "backbone" in module_name else 1.0)
            if isinstance(module, norm_types):
                decay = weight_decay_norm
            elif isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            elif param_name in NO_DECAY_PARAM_NAMES:
                decay = 0.0
            else:
                decay = weight_decay
            name = f"{module_name}.{param_name}" if module_name else param_name
            groups.append({"params": [param], "lr": lr, "weight_decay": decay, "name": name})
    return groups


# --------------------------------------------------------------------------- #
# Gradient clipping
# --------------------------------------------------------------------------- #
def _per_param_clipper(clip_type: str, clip_value: float, norm_type: float) -> Callable:
    if clip_type == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_type == "norm":
        return lambda params: torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
    raise ConfigError(
        f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got {clip_type!r}"
    )


def with_gradient_clipping(
    optimizer_type: type[torch.optim.Optimizer],
    *,
    clip_type: str,
    clip_value: float,
    norm_type: float = 2.0,
) -> type[torch.optim.Optimizer]:
    """A subclass of ``optimizer_type`` whose ``step`` clips gradients first.

    ``clip_type``: ``"full_model"`` clips the 2-norm of all gradients together (published
    Mask2Former, which ignores ``norm_type`` there); ``"value"`` / ``"norm"`` clip each
    parameter group's gradients on their own (detectron2; with one parameter per group this is
    per parameter). The subclass keeps the optimizer's ``state_dict`` format, so checkpoints
    load into the plain optimizer.
    """
    if clip_type == "full_model":

        def clip(groups: list[dict]) -> None:
            params = [p for g in groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_value)

    else:
        clip_one = _per_param_clipper(clip_type, clip_value, norm_type)

        def clip(groups: list[dict]) -> None:
            for group in groups:
                clip_one(group["params"])

    def step(self, closure=None):
        clip(self.param_groups)
        return optimizer_type.step(self, closure)

    name = optimizer_type.__name__ + "WithGradientClip"
    return type(name, (optimizer_type,), {"step": step, "clip_type": clip_type})


def maybe_add_gradient_clipping(
    cfg: CfgNode, optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer
) -> type[torch.optim.Optimizer] | torch.optim.Optimizer:
    """detectron2's ``maybe_add_gradient_clipping``: apply ``SOLVER.CLIP_GRADIENTS``.

    Takes an optimizer class or instance. Clipping off: returns it unchanged. On: a class
    gives its :func:`with_gradient_clipping` subclass; an instance has its class switched to
    that subclass in place (its state and parameter groups are kept) and is returned.
    ``CLIP_TYPE`` "value" / "norm" clip per parameter group, "full_model" all together.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return optimizer
    is_instance = isinstance(optimizer, torch.optim.Optimizer)
    optimizer_type = type(optimizer) if is_instance else optimizer
    if not (isinstance(optimizer_type, type) and issubclass(optimizer_type, torch.optim.Optimizer)):
        raise TypeError(f"expected a torch.optim.Optimizer class or instance, got {optimizer!r}")
    clipped = with_gradient_clipping(
        optimizer_type,
        clip_type=clip.CLIP_TYPE,
        clip_value=clip.CLIP_VALUE,
        norm_type=clip.NORM_TYPE,
    )
    if not is_instance:
        return clipped
    optimizer.__class__ = clipped
    return optimizer


# --------------------------------------------------------------------------- #
# Optimizer
# --------------------------------------------------------------------------- #
#: Devices whose AdamW has a fused kernel (one pass over each parameter instead of a dozen
#: elementwise ops: the step of R50 Mask2Former on one CPU thread takes 24 instead of 90 ms).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def _optimizer_type(
    cfg: CfgNode, params: list[nn.Parameter]
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        # The published AdamW, fused where it can be: the same update up to rounding (one
        # ulp). Not with AMP: GradScaler leaves a fused optimizer's gradients scaled (the
        # kernel unscales them), and gradient clipping, which runs before it, would see them
        # scaled.
        fused = not cfg.SOLVER.AMP.ENABLED and all(
            p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params
        )
        return torch.optim.AdamW, {"fused": True} if fused else {}
    if name == "SGD":
        # as published: no Nesterov (SOLVER.NESTEROV is refused by config.check_supported)
        return torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM}
    raise ConfigError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {cfg.SOLVER.OPTIMIZER!r}")


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`get_param_groups`, with ``SOLVER.CLIP_GRADIENTS`` applied."""
    groups = get_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
        backbone_multiplier=cfg.SOLVER.BACKBONE_MULTIPLIER,
    )
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    optimizer_type, extra = _optimizer_type(cfg, [p for g in groups for p in g["params"]])
    clip = cfg.SOLVER.CLIP_GRADIENTS
    # published: full-model clipping only with a positive CLIP_VALUE, else none at all
    if clip.ENABLED and not (clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE <= 0.0):
        optimizer_type = with_gradient_clipping(
            optimizer_type,
            clip_type=clip.CLIP_TYPE,
            clip_value=clip.CLIP_VALUE,
            norm_type=clip.NORM_TYPE,
        )
    return optimizer_type(groups, lr=cfg.SOLVER.BASE_LR, **extra)


# --------------------------------------------------------------------------- #
# LR schedules
# --------------------------------------------------------------------------- #
def warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """LR factor at iteration ``it`` of a warm-up of ``warmup_iters`` iterations starting at
    ``warmup_factor``: 1 after the warm-up; "constant" holds ``warmup_factor``, "linear" goes
    from it to 1 (detectron2's ``_get_warmup_factor_at_iter``)."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {method!r}")


def warmup_poly_lr(
    base_lr: float, it: int, max_iter: int, warmup: float, power: float, constant_ending: float
) -> float:
    """DeepLab's poly LR at iteration ``it``: ``base_lr * warmup * (1 - it / max_iter) ** power``
    (the progress held at 1 past ``max_iter``), with ``warmup`` the factor of
    :func:`warmup_factor_at_iter`.

    After the warm-up (``warmup == 1``), a positive ``constant_ending`` holds the LR at ``base_lr
    * constant_ending`` once the poly term falls below it. The formula of detectron2's
    ``projects/deeplab`` ``WarmupPolyLR``, operation for operation.
    """
    poly = math.pow(1.0 - min(it / max_iter, 1.0), power)
    if constant_ending > 0 and warmup == 1.0 and poly < constant_ending:
        return base_lr * constant_ending
    return base_lr * warmup * poly


def poly_lr_arguments(cfg: CfgNode) -> dict[str, Any]:
    """The keyword arguments both poly schedulers (DeepLab's ``WarmupPolyLR`` and
    :class:`WarmupPolyParamScheduler`) take from ``SOLVER.WARMUP_*`` and ``SOLVER.POLY_LR_*``."""
    solver = cfg.SOLVER
    return {
        "warmup_factor": solver.WARMUP_FACTOR,
        "warmup_iters": solver.WARMUP_ITERS,
        "warmup_method": solver.WARMUP_METHOD,
        "power": solver.POLY_LR_POWER,
        "constant_ending": solver.POLY_LR_CONSTANT_ENDING,
    }


class WarmupPolyParamScheduler(ParamScheduler):
    """DeepLab's ``WarmupPolyLR`` (:func:`warmup_poly_lr`) as a multiplier of training progress
    ``where = it / max_iter``, for :class:`LRMultiplier`. The same floats as
    ``detectron2.projects.deeplab.lr_scheduler.WarmupPolyLR``.
    """

    def __init__(
        self,
        max_iter: int,
        *,
        warmup_factor: float,
        warmup_iters: int,
        warmup_method: str,
        power: float,
        constant_ending: float = 0.0,
    ) -> None:
        if warmup_method not in ("linear", "constant"):
            raise ConfigError(
                f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}"
            )
        self._max_iter = max_iter
        self._warmup = (warmup_method, warmup_iters, warmup_factor)
        self._power = power
        self._ending = constant_ending

    def __call__(self, where: float) -> float:
        it = round(where * self._max_iter)  # where is it / max_iter: recover the iteration
        method, iters, factor = self._warmup
        warmup = warmup_factor_at_iter(method, it, iters, factor)
        return warmup_poly_lr(1.0, it, self._max_iter, warmup, self._power, self._ending)


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warm-up over the first ``warmup_length`` of training.

    The warm-up goes (linearly, or stays constant) from ``warmup_factor * scheduler(w)`` to
    ``scheduler(w)`` with ``w = warmup_length``; afterwards the value is ``scheduler(where)`` on
    the global training progress (detectron2's ``WarmupParamScheduler``).
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        end_value = scheduler(warmup_length)
        start_value = warmup_factor * end_value
        if warmup_method == "linear":
            warmup: ParamScheduler = LinearParamScheduler(start_value, end_value)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        else:
            raise ConfigError(
                f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}"
            )
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets every group's LR to ``initial_lr * multiplier(iteration / max_iter)``.

    Step it once per iteration. Its ``state_dict`` holds only ``base_lrs`` and ``last_epoch``
    (the iteration), so a resumed run continues with the same LR.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"multiplier must be an fvcore ParamScheduler, got {type(multiplier)}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:
        factor = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base_lr * factor for base_lr in self.base_lrs]


def _main_schedule(cfg: CfgNode) -> ParamScheduler:
    name, solver = cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER
    if name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        if len(steps) != len(solver.STEPS):
            logger.warning("SOLVER.STEPS beyond SOLVER.MAX_ITER=%d are ignored", solver.MAX_ITER)
        return MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=solver.MAX_ITER,
        )
    if name == "WarmupCosineLR":
        end_value = solver.BASE_LR_END / solver.BASE_LR
        if not 0.0 <= end_value <= 1.0:
            raise ConfigError(
                f"SOLVER.BASE_LR_END / SOLVER.BASE_LR must be in [0, 1], got {end_value}"
            )
        return CosineParamScheduler(1.0, end_value)
    raise ConfigError(
        "SOLVER.LR_SCHEDULER_NAME must be WarmupMultiStepLR, WarmupCosineLR or WarmupPolyLR, "
        f"got {name!r}"
    )


def build_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Warm-up (``SOLVER.WARMUP_*``) then the schedule named by ``SOLVER.LR_SCHEDULER_NAME``."""
    solver = cfg.SOLVER
    if solver.MAX_ITER <= 0:
        raise ConfigError(f"SOLVER.MAX_ITER must be positive, got {solver.MAX_ITER}")
    if solver.LR_SCHEDULER_NAME == "WarmupPolyLR":
        # DeepLab's schedule multiplies its own warm-up into the poly term
        poly = WarmupPolyParamScheduler(solver.MAX_ITER, **poly_lr_arguments(cfg))
        return LRMultiplier(optimizer, poly, max_iter=solver.MAX_ITER)
    schedule = WarmupParamScheduler(
        _main_schedule(cfg),
        solver.WARMUP_FACTOR,
        min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
        solver.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, schedule, max_iter=solver.MAX_ITER)
