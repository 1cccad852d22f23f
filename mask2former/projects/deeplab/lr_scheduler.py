"""DeepLab's poly learning-rate schedule and the scheduler builder that prefers it."""

from __future__ import annotations

import torch

from mask2former.config import CfgNode, ConfigError
from mask2former.solver import build_lr_scheduler as build_default_lr_scheduler

__all__ = ["WarmupPolyLR", "build_lr_scheduler", "warmup_factor_at_iter"]


def warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """LR factor at iteration ``it`` of a warm-up of ``warmup_iters`` iterations starting at
    ``warmup_factor``: 1 after the warm-up; "constant" holds ``warmup_factor``, "linear"
    goes from it to 1."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {method!r}")


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """``base_lr * warmup(it) * (1 - it / max_iters) ** power``, stepped once per iteration.

    After the warm-up, once the poly factor falls below ``constant_ending`` (> 0) the LR
    stays at ``base_lr * constant_ending``. detectron2's DeepLab ``WarmupPolyLR``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
        power: float = 0.9,
        constant_ending: float = 0.0,
    ) -> None:
        if max_iters <= 0:
            raise ConfigError(f"SOLVER.MAX_ITER must be positive, got {max_iters}")
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        it = self.last_epoch
        warmup = warmup_factor_at_iter(
            self.warmup_method, it, self.warmup_iters, self.warmup_factor
        )
        poly = (1.0 - min(it / self.max_iters, 1.0)) ** self.power
        if self.constant_ending > 0 and warmup == 1.0 and poly < self.constant_ending:
            return [base_lr * self.constant_ending for base_lr in self.base_lrs]
        return [base_lr * warmup * poly for base_lr in self.base_lrs]


def build_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """:class:`WarmupPolyLR` when ``SOLVER.LR_SCHEDULER_NAME`` is "WarmupPolyLR", otherwise
    :func:`mask2former.solver.build_lr_scheduler` (multi-step, cosine)."""
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_default_lr_scheduler(cfg, optimizer)
    return WarmupPolyLR(
        optimizer,
        solver.MAX_ITER,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS,
        warmup_method=solver.WARMUP_METHOD,
        power=solver.POLY_LR_POWER,
        constant_ending=solver.POLY_LR_CONSTANT_ENDING,
    )
