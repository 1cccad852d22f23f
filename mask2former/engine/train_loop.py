"""The training loop: ``TrainerBase`` runs hooks around ``run_step``; two step implementations.

``SimpleTrainer`` does forward, loss check, backward, gradient check and optimizer step in
float32; ``AMPTrainer`` runs the forward under autocast (float16 with a ``GradScaler``, or
bfloat16). A NaN or inf loss or gradient stops training with a ``FloatingPointError`` before
the optimizer step, so the weights (and the checkpoints) stay finite.

Each step reads the device twice beyond the model's own reads: the loss terms, copied to the
host once for the finiteness check and the logged metrics together, and one fused gradient
norm (not under a float16 ``GradScaler``, which checks the gradients itself).
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import comm
from ..utils.events import EventStorage, get_event_storage
from ..utils.finite import nonfinite_names

logger = logging.getLogger(__name__)


class HookBase:
    """Called by the trainer around training and each step; ``self.trainer`` is set on register.

    Iteration ``trainer.iter`` is the one being run; ``after_step`` of the last iteration of a
    run sees ``trainer.iter == trainer.max_iter - 1``.
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}


class TrainerBase:
    """Iterates ``run_step`` from ``start_iter`` to ``max_iter`` and calls the hooks.

    Attributes: ``iter`` (current iteration), ``start_iter``, ``max_iter``, ``storage``
    (the :class:`EventStorage` of the run), ``completed`` (True once every step ran).
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.completed = False
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for hook in hooks:
            if hook is None:
                continue
            # weak proxy: the trainer owns the hooks, so no reference cycle
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.completed = False
        with EventStorage(start_iter) as self.storage:
            try:
                self._call("before_train")
                for self.iter in range(start_iter, max_iter):
                    self._call("before_step")
                    self.run_step()
                    self._call("after_step")
                    self.storage.step()
                self.iter += 1  # equals max_iter once every step ran
                self.completed = True
            except Exception:
                logger.exception("Exception during training at iteration %d:", self.iter)
                raise
            finally:
                self._call("after_train")

    def _call(self, stage: str) -> None:
        for hook in self._hooks:
            getattr(hook, stage)()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iter}


#: What the errors of a diverging run suggest.
DIVERGENCE_HINT = (
    "If the losses were growing, training diverged: try a lower SOLVER.BASE_LR, gradient "
    "clipping (SOLVER.CLIP_GRADIENTS.ENABLED True) or a longer warm-up (SOLVER.WARMUP_ITERS), "
    "then continue from the last checkpoint with --resume."
)


def _format_losses(losses: Mapping[str, float | torch.Tensor]) -> str:
    return ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(losses.items()))


def loss_values(loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The scalar loss terms as Python floats, copied to the host together (one transfer)."""
    if not loss_dict:
        return {}
    # float64 holds every float16 / bfloat16 / float32 / float64 loss exactly
    values = torch.stack([v.detach().to(torch.float64) for v in loss_dict.values()]).tolist()
    return dict(zip(loss_dict, values))


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> dict[str, float]:
    """Raise ``FloatingPointError`` naming the iteration and every loss term if any is NaN/inf;
    else return the terms as Python floats (:func:`loss_values`: one copy to the host, which
    the trainer logs too).
    """
    values = loss_values(loss_dict)
    if all(math.isfinite(v) for v in values.values()):
        return values
    raise FloatingPointError(
        f"Loss became infinite or NaN at iteration {iteration}; training stopped before the "
        f"optimizer step (no checkpoint written for this iteration). Loss terms: "
        f"{_format_losses(values)}. {DIVERGENCE_HINT}"
    )


def check_grads_finite(
    model: nn.Module,
    loss_dict: Mapping[str, float | torch.Tensor],
    iteration: int,
    max_names: int = 5,
) -> None:
    """Raise ``FloatingPointError`` if a parameter's gradient has a NaN or inf entry.

    The message names the iteration, the loss terms (floats, or tensors read only for the
    message) and the first ``max_names`` parameters with non-finite gradients. One fused
    check and one host sync when all are finite.
    """
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    bad = nonfinite_names(grads)
    if not bad:
        return
    more = f", ... ({len(bad)} of {len(grads)})" if len(bad) > max_names else ""
    raise FloatingPointError(
        f"Gradients became infinite or NaN at iteration {iteration} (the loss terms are "
        f"finite); training stopped before the optimizer step (no checkpoint written for this "
        f"iteration). Parameters with non-finite gradients: {', '.join(bad[:max_names])}{more}. "
        f"Loss terms: {_format_losses(loss_dict)}. {DIVERGENCE_HINT}"
    )


class SimpleTrainer(TrainerBase):
    """One step: next batch, ``loss_dict = model(batch)``, check finite, backward, check the
    gradients finite, step.

    ``model(batch)`` in training mode must return a dict of scalar loss tensors (already
    weighted); their sum is minimised.
    """

    def __init__(
        self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer

    @property
    def _data_loader_iter(self):
        # created on first use so that the loader's workers start only when training does
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def _next_batch(self) -> tuple[Any, float]:
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        return data, time.perf_counter() - start

    def _forward(self, data: Any) -> tuple[dict[str, float], torch.Tensor]:
        """The loss terms as Python floats (checked finite) and their sum as a tensor."""
        try:
            loss_dict = self.model(data)
        except FloatingPointError as e:  # e.g. the matcher, given non-finite predictions
            raise FloatingPointError(
                f"Iteration {self.iter}: {e} Training stopped before the optimizer step (no "
                f"checkpoint written for this iteration). {DIVERGENCE_HINT}"
            ) from e
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        values = check_losses_finite(loss_dict, self.iter)
        return values, sum(loss_dict.values())

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: the model was switched to eval mode"
        data, data_time = self._next_batch()
        terms, losses = self._forward(data)
        self.optimizer.zero_grad(set_to_none=True)
        losses.backward()
        self._call("after_backward")
        self.write_metrics(terms, data_time)
        check_grads_finite(self.model, terms, self.iter)
        self.optimizer.step()

    def write_metrics(
        self, loss_dict: Mapping[str, float | torch.Tensor], data_time: float
    ) -> None:
        """Average the loss terms (floats; tensors are read one by one) and data time over
        processes and put them in the storage."""
        metrics = {k: float(v) for k, v in loss_dict.items()}
        metrics["data_time"] = data_time
        all_metrics = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        # data time: the slowest process is the one the others wait for
        storage.put_scalar("data_time", max(m.pop("data_time") for m in all_metrics))
        averaged = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
        storage.put_scalar("total_loss", sum(averaged.values()))
        if len(averaged) > 1:
            storage.put_scalars(**averaged)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}


def _autocast_device(model: nn.Module) -> str:
    param = next(model.parameters(), None)
    return param.device.type if param is not None else "cpu"


class AMPTrainer(SimpleTrainer):
    """``SimpleTrainer`` with the forward under ``torch.autocast``.

    ``precision=torch.float16`` scales the loss with ``grad_scaler`` (steps whose gradients
    overflow are skipped by the scaler, so inf gradients are not an error there);
    ``torch.bfloat16`` needs no scaler, and its gradients are checked as in ``SimpleTrainer``.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        precision: torch.dtype = torch.float16,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        super().__init__(model, data_loader, optimizer)
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMPTrainer: precision must be float16 or bfloat16, got {precision}")
        self.precision = precision
        self.device_type = _autocast_device(model)
        if precision == torch.float16 and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler if precision == torch.float16 else None

    def run_step(self) -> None:
        assert self.model.training, "AMPTrainer: the model was switched to eval mode"
        data, data_time = self._next_batch()
        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            terms, losses = self._forward(data)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()
        self._call("after_backward")
        self.write_metrics(terms, data_time)
        if self.grad_scaler is None:
            check_grads_finite(self.model, terms, self.iter)
            self.optimizer.step()
        else:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
