"""inference_on_dataset and DatasetEvaluators."""

import logging
import re

import pytest
import torch

from mask2former.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from mask2former.evaluation.evaluator import format_results_table


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, batch):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [{"value": self.w * x["x"]} for x in batch]


class _Sum(DatasetEvaluator):
    def __init__(self, task):
        self.task = task

    def reset(self):
        self.total, self.count = 0.0, 0

    def process(self, inputs, outputs):
        for out in outputs:
            assert not out["value"].requires_grad  # produced under no_grad
            self.total += float(out["value"])
            self.count += 1

    def evaluate(self):
        return {self.task: {"sum": self.total, "count": self.count}}


def test_inference_runs_in_eval_no_grad_and_restores_mode(caplog):
    model = _Model().train()
    loader = [[{"x": torch.tensor(float(i))}, {"x": torch.tensor(1.0)}] for i in range(7)]
    with caplog.at_level(logging.INFO, logger="mask2former.evaluation.evaluator"):
        res = inference_on_dataset(model, loader, [_Sum("a"), _Sum("b")])
    # sum of x: 0 + 1 + ... + 6 = 21 from the first items, 7 * 1 from the second ones.
    assert res == {"a": {"sum": 28.0, "count": 14}, "b": {"sum": 28.0, "count": 14}}
    assert model.seen == [(False, False)] * 7 and model.training
    assert "4 images timed after 5 warm-up batches" in caplog.text
    assert re.search(r"b:\n\|\s+sum \| count \|\n\|\s+28.0000 \|\s+14 \|", caplog.text)


def test_mode_restored_after_an_error():
    model = _Model().train()

    class Bad(DatasetEvaluator):
        def process(self, inputs, outputs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, [[{"x": torch.tensor(1.0)}]], Bad())
    assert model.training


def test_duplicate_tasks_are_an_error():
    evaluators = DatasetEvaluators([_Sum("a"), _Sum("a")])
    evaluators.reset()
    with pytest.raises(KeyError, match="'a'"):
        evaluators.evaluate()


def test_results_table_lists_every_metric():
    table = format_results_table({"segm": {"AP": 12.3456, "AP50": float("nan")}})
    assert "segm:" in table and "12.3456" in table and "nan" in table and "AP50" in table
