"""Training hooks: timer, LR scheduler, precise BN, periodic checkpoints, evaluation and
metric writers."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import math
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats
from torch import nn

from ..modeling.backbone.swin import DropPath
from ..utils import comm
from ..utils.events import EventStorage, EventWriter
from .rng import get_rng_states, isolated_rng
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


# --------------------------------------------------------------------------- #
# Validation loss and the best checkpoint
# --------------------------------------------------------------------------- #
#: Layers switched to eval mode while the validation loss is computed: normalisation layers
#: with running statistics (which training mode would update) and the random ones (dropout,
#: attention dropout, stochastic depth), so that the loss is that of the model as it predicts.
LOSS_MODE_EVAL_LAYERS = (
    nn.modules.batchnorm._NormBase,
    nn.modules.dropout._DropoutNd,
    nn.MultiheadAttention,
    DropPath,
)


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in training mode, so that it returns its losses, but with every layer of
    :data:`LOSS_MODE_EVAL_LAYERS` in eval mode: BatchNorm normalises with its running
    statistics and leaves them (and ``num_batches_tracked``) unchanged, dropout and stochastic
    depth are off. Every module's own mode is restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.train()
    for module in model.modules():
        if isinstance(module, LOSS_MODE_EVAL_LAYERS):
            module.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training  # not .train(), which would recurse into children


class ValidationLoss(HookBase):
    """Puts the training losses of ``model`` on validation data in the event storage.

    Every ``period`` iterations and after the last one, each process runs ``model`` in
    :func:`loss_mode` without gradients on the first batches of its shard of ``data_loader``
    (batches of the training mapper's output: images with targets), as many as the shortest
    shard has, at most ``num_iter`` (0: no bound); every process runs the same number, as the
    criterion averages the mask count over processes. Each loss term is averaged over the
    batches of all processes and put as ``val_<term>``, their sum as ``val_total_loss`` (not
    smoothed), so they reach ``metrics.json`` and TensorBoard with the training curves.

    The pass runs with generators seeded by ``seed`` (the same random augmentations every
    time) and then restored, so the training draws what it would draw without this hook. Model
    parameters and buffers are unchanged (see :func:`loss_mode`). ``model`` is the model itself,
    not a ``DistributedDataParallel`` wrapper.
    """

    PREFIX = "val_"

    def __init__(
        self,
        period: int,
        model: nn.Module,
        data_loader: Iterable,
        num_iter: int = 0,
        seed: int = 0,
    ) -> None:
        if period <= 0:
            raise ValueError(f"ValidationLoss: period must be positive, got {period}")
        if num_iter < 0:
            raise ValueError(f"ValidationLoss: num_iter must be >= 0 (0: no bound), got {num_iter}")
        self._period = period
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._seed = seed

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 or next_iter == self.trainer.max_iter:
            losses = self.compute()
            self.trainer.storage.put_scalars(**losses, smoothing_hint=False)

    def _num_batches(self) -> int:
        """Batches every process runs: the shortest shard's, at most ``num_iter``."""
        length = len(self._data_loader) if hasattr(self._data_loader, "__len__") else None
        lengths = comm.all_gather(length)
        if any(n is None for n in lengths):
            if self._num_iter == 0:
                raise ValueError("ValidationLoss: a loader without len() needs num_iter > 0")
            return self._num_iter
        shortest = min(lengths)
        if shortest == 0:
            raise ValueError(
                f"ValidationLoss: a process has no validation batch (batches per process: "
                f"{lengths}); use more validation images than processes"
            )
        return min(shortest, self._num_iter) if self._num_iter > 0 else shortest

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        """``{"val_<term>": mean, ..., "val_total_loss": sum of the means}``, the same on
        every process."""
        sums: dict[str, float] = {}
        count = 0
        with isolated_rng(self._seed), loss_mode(self._model) as model:
            for batch in itertools.islice(self._data_loader, self._num_batches()):
                loss_dict = model(batch)
                if isinstance(loss_dict, torch.Tensor):
                    loss_dict = {"total_loss": loss_dict}
                for name, value in loss_dict.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                count += 1
        gathered = comm.all_gather((sums, count))
        count = sum(process_count for _, process_count in gathered)
        if count == 0:
            raise ValueError("ValidationLoss: the validation loader gave no batch")
        totals: dict[str, float] = {}
        for process_sums, _ in gathered:
            for name, value in process_sums.items():
                totals[name] = totals.get(name, 0.0) + value
        means = {f"{self.PREFIX}{name}": value / count for name, value in sorted(totals.items())}
        means[f"{self.PREFIX}total_loss"] = sum(means.values())
        logger.info(
            "Validation loss after iteration %d (%d batches): %s",
            self.trainer.iter,
            count,
            ", ".join(f"{k}={v:.4g}" for k, v in means.items()),
        )
        return means


class BestCheckpointer(HookBase):
    """Saves ``<file_prefix>.pth`` whenever ``val_metric`` beats its best value (detectron2's
    ``hooks.BestCheckpointer``, same arguments and behaviour).

    Register it after the hook that puts the metric (``EvalHook``, :class:`ValidationLoss`);
    ``eval_period`` is that hook's period: the latest value of ``val_metric`` in the event
    storage is compared at the same iterations and after the last one. ``mode`` "max" keeps
    the highest value, "min" the lowest, strictly better values only; NaN and infinite values
    are never saved (detectron2 saves an infinite one, without counting it as the best, once
    there is a best); a metric missing from the storage is warned about, naming it. The checkpoint is a full one
    (model and the checkpointer's other state) with ``iteration`` = the last iteration run
    (detectron2 stores the metric's iteration, which is the same there; here the metrics of
    the evaluation after training are stamped ``max_iter``), and, as every
    ``Checkpointer.save``, it becomes ``last_checkpoint``, as in detectron2. The best value is
    not kept across a resume: the first comparison after it saves.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f'BestCheckpointer: mode must be "max" or "min", got {mode!r}')
        self._period = eval_period
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._compare = operator.gt if mode == "max" else operator.lt
        self._file_prefix = file_prefix
        self.best_metric: float | None = None
        self.best_iter: int | None = None

    def after_step(self) -> None:
        # the iterations at which EvalHook evaluates
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._best_checking(self.trainer.iter)

    def after_train(self) -> None:
        if self.trainer.completed:
            self._best_checking(self.trainer.max_iter - 1)

    def _best_checking(self, iteration: int) -> None:
        """Compare the latest ``val_metric``; save the model as after ``iteration`` (the last
        one run, what a resume from it continues after) if it is the best."""
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            logger.warning(
                "BestCheckpointer: metric %r is not in the event storage (metrics there: %s); "
                "no best checkpoint is saved for it",
                self._val_metric,
                ", ".join(sorted(self.trainer.storage.latest())) or "none",
            )
            return
        value = latest[0]
        if not math.isfinite(value):
            logger.warning(
                "BestCheckpointer: %s = %s is not finite: not saved", self._val_metric, value
            )
            return
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(
                "Not saving %s: %s = %.5f is not better than %.5f at iteration %d",
                self._file_prefix,
                self._val_metric,
                value,
                self.best_metric,
                self.best_iter,
            )
            return
        previous = self.best_metric
        self.best_metric, self.best_iter = value, iteration
        self._checkpointer.save(self._file_prefix, iteration=iteration)
        logger.info(
            "Saved %s: %s = %.5f at iteration %d (previous best: %s)",
            self._file_prefix,
            self._val_metric,
            value,
            iteration,
            "none" if previous is None else f"{previous:.5f}",
        )


__all__ += ["BestCheckpointer", "ValidationLoss"]
