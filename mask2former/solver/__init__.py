"""Optimizers, parameter groups, gradient clipping and LR schedules."""

from .build import (
    LRMultiplier,
    WarmupParamScheduler,
    WarmupPolyParamScheduler,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    with_gradient_clipping,
)

__all__ = [
    "LRMultiplier",
    "WarmupParamScheduler",
    "WarmupPolyParamScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "get_param_groups",
    "with_gradient_clipping",
]
