"""Training: the loop and its hooks, the default trainer and set-up, and the launcher."""

from .defaults import DefaultTrainer, default_argument_parser, default_setup, default_writers
from .hooks import (
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    PreciseBN,
)
from .launch import launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase, check_losses_finite

__all__ = [
    "AMPTrainer",
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "PreciseBN",
    "SimpleTrainer",
    "TrainerBase",
    "check_losses_finite",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "launch",
]
