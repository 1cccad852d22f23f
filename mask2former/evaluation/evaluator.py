"""The evaluator protocol and the loop that runs a model over a dataset and feeds it."""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Collection, Iterable, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from mask2former.utils import comm

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates predictions image by image and computes metrics at the end.

    Protocol (detectron2's): ``reset()`` before a pass over the dataset; ``process(inputs,
    outputs)`` for every batch, with the model's inputs (list of dataset dicts) and outputs
    (list of per-image dicts); ``evaluate()`` once at the end. In a multi-process run every
    process calls ``evaluate()``; the main process returns ``{task: {metric: value}}`` and
    the others return ``{}`` (or None).

    ``required_outputs`` names the keys of the model's per-image outputs that ``process``
    reads ("sem_seg", "instances", "panoptic_seg"); None when an evaluator does not say.
    """

    required_outputs: Optional[tuple[str, ...]] = None

    def reset(self) -> None:
        pass

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        pass

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        return {}


def gather_on_main(obj: Any, distributed: bool) -> Optional[list]:
    """Every process's ``obj``, in rank order, on the main process; None on the others.

    With ``distributed`` False, ``[obj]``. Otherwise every process waits for the others
    (``comm.synchronize``) and sends ``obj`` to rank 0, as an evaluator's ``evaluate`` does
    before it computes metrics there.
    """
    if not distributed:
        return [obj]
    comm.synchronize()
    gathered = comm.gather(obj, dst=0)
    return gathered if comm.is_main_process() else None


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result dicts are merged (tasks must not clash)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not (comm.is_main_process() and result):
                continue
            for task, metrics in result.items():
                if task in results:
                    raise KeyError(f"two evaluators both report the task {task!r}")
                results[task] = metrics
        return results


def split_by_outputs(
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator], outputs: Collection[str]
) -> tuple[list[DatasetEvaluator], list[DatasetEvaluator]]:
    """Split ``evaluator`` (one, a :class:`DatasetEvaluators` or a list; nested ones are
    flattened) into ``(usable, unusable)``: usable evaluators need only model outputs in
    ``outputs``, or do not declare what they need (``required_outputs`` None)."""
    if isinstance(evaluator, DatasetEvaluators):
        evaluator = evaluator._evaluators
    if isinstance(evaluator, DatasetEvaluator):
        needed = evaluator.required_outputs
        fits = needed is None or set(needed) <= set(outputs)
        return ([evaluator], []) if fits else ([], [evaluator])
    usable: list[DatasetEvaluator] = []
    unusable: list[DatasetEvaluator] = []
    for item in evaluator:
        more_usable, more_unusable = split_by_outputs(item, outputs)
        usable += more_usable
        unusable += more_unusable
    return usable, unusable


@contextmanager
def inference_context(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (and no gradients) inside the block; the previous mode is restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def inference_on_dataset(
    model: torch.nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: Optional[DatasetEvaluator | Sequence[DatasetEvaluator]],
    num_warmup: int = 5,
) -> dict[str, dict[str, float]]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate with ``evaluator``.

    The model runs in eval mode under ``torch.no_grad()``; its mode is restored afterwards.
    Timing (seconds per image) leaves out the first ``num_warmup`` batches. Returns the
    evaluator's results on the main process ({} elsewhere) and logs them as a table.
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    logger.info("Start inference on %s batches", total if total is not None else "?")
    timer = _Timer(num_warmup)
    with inference_context(model):
        bar = tqdm(data_loader, total=total, disable=not comm.is_main_process(), desc="eval")
        for inputs in bar:
            timer.start_batch(len(inputs))
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timer.model_done()
            evaluator.process(inputs, outputs)
            timer.batch_done()
            bar.set_postfix_str(timer.postfix())
    timer.log_totals()
    results = evaluator.evaluate()
    if results is None:  # evaluators may return None on non-main processes
        results = {}
    if comm.is_main_process():
        log_results_table(results)
    return results


class _Timer:
    """Seconds per image for the model and for everything, after ``num_warmup`` batches."""

    def __init__(self, num_warmup: int):
        self.num_warmup = num_warmup
        self.batches = self.images = 0
        self.model_time = self.total_time = 0.0
        self.start = time.perf_counter()

    def start_batch(self, num_images: int) -> None:
        self.batches += 1
        self._num_images = num_images
        self._t0 = time.perf_counter()

    def model_done(self) -> None:
        self._t1 = time.perf_counter()

    def batch_done(self) -> None:
        if self.batches <= self.num_warmup:
            return
        self.images += self._num_images
        self.model_time += self._t1 - self._t0
        self.total_time += time.perf_counter() - self._t0

    def postfix(self) -> str:
        if not self.images:
            return "warming up"
        return f"{self.total_time / self.images:.4f} s/img"

    def log_totals(self) -> None:
        wall = time.perf_counter() - self.start
        logger.info(
            "Total inference time: %s (%d batches, %d images timed after %d warm-up batches): "
            "model %.4f s/img, model + evaluator %.4f s/img per device, on %d devices",
            str(datetime.timedelta(seconds=int(wall))),
            self.batches,
            self.images,
            self.num_warmup,
            self.model_time / max(self.images, 1),
            self.total_time / max(self.images, 1),
            comm.get_world_size(),
        )


def format_results_table(results: dict[str, dict[str, float]], max_columns: int = 12) -> str:
    """A plain-text table per task: a header row of metric names and a row of values."""
    blocks = []
    for task, metrics in results.items():
        names = list(metrics)
        for start in range(0, max(len(names), 1), max_columns):
            chunk = names[start : start + max_columns]
            values = [_format_value(metrics[name]) for name in chunk]
            widths = [max(len(n), len(v)) for n, v in zip(chunk, values)]
            header = " | ".join(n.rjust(w) for n, w in zip(chunk, widths))
            row = " | ".join(v.rjust(w) for v, w in zip(values, widths))
            blocks.append(f"{task}:\n| {header} |\n| {row} |")
    return "\n".join(blocks)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def log_results_table(results: dict[str, dict[str, float]]) -> None:
    """Log every task's metrics as a table (detectron2's ``print_csv_format`` role)."""
    if results:
        logger.info("Evaluation results:\n%s", format_results_table(results))
