"""DeepLab's poly learning-rate schedule and the scheduler builder that prefers it."""

from __future__ import annotations

import torch

from mask2former.config import CfgNode, ConfigError
from mask2former.solver import build_lr_scheduler as build_default_lr_scheduler
from mask2former.solver.build import poly_lr_arguments, warmup_factor_at_iter, warmup_poly_lr

__all__ = ["WarmupPolyLR", "build_lr_scheduler", "warmup_factor_at_iter"]


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """``base_lr * warmup(it) * (1 - it / max_iters) ** power``, stepped once per iteration.

    After the warm-up, once the poly factor falls below ``constant_ending`` (> 0) the LR
    stays at ``base_lr * constant_ending``. detectron2's DeepLab ``WarmupPolyLR``; the formula
    is :func:`mask2former.solver.build.warmup_poly_lr`, which our own ``WarmupPolyLR``
    schedule (:class:`mask2former.solver.WarmupPolyParamScheduler`) uses too.
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
        return [
            warmup_poly_lr(base_lr, it, self.max_iters, warmup, self.power, self.constant_ending)
            for base_lr in self.base_lrs
        ]


def build_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """:class:`WarmupPolyLR` when ``SOLVER.LR_SCHEDULER_NAME`` is "WarmupPolyLR", otherwise
    :func:`mask2former.solver.build_lr_scheduler` (multi-step, cosine)."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_default_lr_scheduler(cfg, optimizer)
    return WarmupPolyLR(optimizer, cfg.SOLVER.MAX_ITER, **poly_lr_arguments(cfg))
