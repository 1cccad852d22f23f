"""Training hooks: timer, LR scheduler, precise BN, periodic checkpoints, evaluation and
metric writers."""

from __future__ import annotations

import datetime
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats
from torch import nn

from ..utils import comm
from ..utils.events import EventStorage, EventWriter
from .rng import get_rng_states
from .train_loop import HookBase

logger = logging.getLogger(__name__)

__all__ = [
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "PreciseBN",
]


class IterationTimer(HookBase):
    """Puts each step's wall time as ``time``; logs the total at the end.

    The first ``warmup_iter`` steps are left out of the reported average (start-up costs).
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._train_start = 0.0
        self._timed_time = 0.0
        self._timed_iters = 0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        seconds = time.perf_counter() - self._step_start
        self.trainer.storage.put_scalar("time", seconds)
        if self.trainer.iter - self.trainer.start_iter >= self._warmup_iter:
            self._timed_time += seconds
            self._timed_iters += 1

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        if self._timed_iters > 0:
            logger.info(
                "Overall training speed: %d iterations in %s (%.4f s / it)",
                self._timed_iters,
                datetime.timedelta(seconds=int(self._timed_time)),
                self._timed_time / self._timed_iters,
            )
        logger.info("Total training time: %s", datetime.timedelta(seconds=int(total)))


class LRScheduler(HookBase):
    """Puts the largest parameter-group LR as ``lr`` and steps the scheduler every iteration."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        self._optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self) -> None:
        lr = max(group["lr"] for group in self._optimizer.param_groups)
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()


class PreciseBN(HookBase):
    """Recomputes the BatchNorm statistics (detectron2's ``hooks.PreciseBN``).

    Every ``period`` iterations and after the last one, the running mean and variance of every
    BatchNorm layer of ``model`` that is in training mode are replaced by the population
    statistics of ``num_iter`` batches from ``data_loader``, computed with the current weights
    by fvcore's ``update_bn_stats`` (training-mode forwards without gradients; the loader's
    iterator is kept between calls). Registered before :class:`EvalHook`, so the evaluation of
    the same iteration sees the new statistics. A model without such layers disables the hook.
    """

    def __init__(self, period: int, model: nn.Module, data_loader: Iterable, num_iter: int) -> None:
        self._disabled = len(get_bn_modules(model)) == 0
        if self._disabled:
            logger.info("PreciseBN is disabled: the model has no BatchNorm layer in training mode")
            return
        self._period = period
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._data_iter: Iterator | None = None

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        is_final = next_iter == self.trainer.max_iter
        if is_final or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def _batches(self) -> Iterator:
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)
        for i in itertools.count(1):
            if i % 100 == 0:
                logger.info("Running precise BN ... %d/%d iterations", i, self._num_iter)
            yield next(self._data_iter)

    def update_stats(self) -> None:
        """Recompute the statistics now (does nothing when the hook is disabled)."""
        if self._disabled:
            return
        logger.info(
            "Running precise BN for %d iterations (the statistics differ from run to run "
            "with the batches drawn)",
            self._num_iter,
        )
        with EventStorage():  # events of these forwards are discarded
            update_bn_stats(self._model, self._batches(), self._num_iter)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_<iter>`` every ``period`` iterations and ``model_final`` after the last.

    A checkpoint taken after iteration ``i`` stores ``iteration=i`` and, per process, the
    random generator states, so a resumed run starts at ``i + 1`` where this one would have.
    Nothing is saved for a step that raised (a NaN loss or gradient), and nothing on the way out
    of a crash; :class:`DetectionCheckpointer` refuses NaN / inf weights (``FloatingPointError``),
    so ``last_checkpoint`` always names a finite model.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_iter: int | None = None,
        file_prefix: str = "model",
    ) -> None:
        if period <= 0:
            raise ValueError(f"SOLVER.CHECKPOINT_PERIOD must be positive, got {period}")
        self.checkpointer = checkpointer
        self.period = period
        self.max_iter = max_iter
        self.file_prefix = file_prefix

    def after_step(self) -> None:
        it = self.trainer.iter
        max_iter = self.max_iter if self.max_iter is not None else self.trainer.max_iter
        names = []
        if (it + 1) % self.period == 0 and it + 1 < max_iter:
            names.append(f"{self.file_prefix}_{it:07d}")
        if it + 1 == max_iter:
            names.append(f"{self.file_prefix}_final")
        if names:
            self.save(names, it)

    def save(self, names: Sequence[str], iteration: int) -> None:
        # every process takes part in gathering the generator states; rank 0 writes
        rng_states = comm.all_gather(get_rng_states())
        for name in names:
            self.checkpointer.save(name, iteration=iteration, rng_states=rng_states)
        comm.synchronize()


class EvalHook(HookBase):
    """Runs ``eval_function()`` every ``eval_period`` iterations and after the last one.

    ``eval_function`` returns ``{task: {metric: value}}`` (or a flat dict); the values are put
    in the event storage as ``task/metric``. Every process calls it (evaluation may be
    distributed); ``eval_period`` 0 evaluates only after training.
    """

    def __init__(
        self,
        eval_period: int,
        eval_function: Callable[[], Mapping[str, Any]],
        eval_after_train: bool = True,
    ) -> None:
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train
        self.last_results: Mapping[str, Any] | None = None

    def _do_eval(self) -> None:
        results = self._func()
        self.last_results = results
        if results:
            flat = flatten_results(results)
            for name, value in flat.items():
                if not isinstance(value, (int, float)):
                    raise TypeError(f"evaluation metric {name!r} is not a number: {value!r}")
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        comm.synchronize()  # evaluation may take different time on each process

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        if self._eval_after_train and self.trainer.completed:
            self._do_eval()
        del self._func  # may hold a reference to the model and data


def flatten_results(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"panoptic_seg": {"PQ": 1.0}}`` -> ``{"panoptic_seg/PQ": 1.0}``."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_results(value, name))
        else:
            flat[name] = value
    return flat


class PeriodicWriter(HookBase):
    """Calls each writer's ``write()`` every ``period`` iterations and at the end."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        self._period = period

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 or next_iter == self.trainer.max_iter:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            writer.write()  # the final evaluation's metrics
            writer.close()
