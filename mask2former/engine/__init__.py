"""Training: the loop and its hooks, the default trainer and set-up, the launcher, and the
predictor."""

from . import hooks
from .defaults import (
    DefaultPredictor,
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    require_config_file,
)
from .hooks import (
    BestCheckpointer,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    PreciseBN,
    ValidationLoss,
)
from .launch import launch
from .test_time_augmentation import SemanticSegmentorWithTTA
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase, check_losses_finite

__all__ = [
    "AMPTrainer",
    "BestCheckpointer",
    "DefaultPredictor",
    "DefaultTrainer",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "PreciseBN",
    "SemanticSegmentorWithTTA",
    "SimpleTrainer",
    "TrainerBase",
    "ValidationLoss",
    "check_losses_finite",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "hooks",
    "launch",
    "require_config_file",
]
