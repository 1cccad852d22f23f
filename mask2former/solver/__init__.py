"""Optimizers, parameter groups, gradient clipping and LR schedules."""

from .build import (
    LRMultiplier,
    WarmupParamScheduler,
    WarmupPolyParamScheduler,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    maybe_add_gradient_clipping,
    with_gradient_clipping,
)

__all__ = [
    "LRMultiplier",
    "WarmupParamScheduler",
    "WarmupPolyParamScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "get_param_groups",
    "maybe_add_gradient_clipping",
    "with_gradient_clipping",
]
