"""A tiny model, data and trainer for engine tests; also a train_net-like script.

Run as ``python engine_toy.py [--num-gpus N --num-machines M --machine-rank R --dist-url U]
[--resume] KEY VALUE ...``. Failure injection for the reliability tests through environment
variables: ``TOY_FAIL_RANK``/``TOY_FAIL_ITER`` (raise there), ``TOY_KILL_ITER`` (SIGKILL itself
before that iteration), ``TOY_NAN_ITER`` (loss becomes NaN at that iteration),
``TOY_NAN_GRAD_ITER`` (the loss stays finite, the gradient of ``query_embed.weight`` is NaN).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import OrderedDict

import torch
from torch import nn

from mask2former.config import get_cfg
from mask2former.engine import DefaultTrainer, HookBase, default_argument_parser, launch
from mask2former.modeling import META_ARCH_REGISTRY
from mask2former.utils import comm

IN_FEATURES = 6
GLOBAL_SAMPLES = 8  # samples in the fixed training batch, split over the processes


class EngineToyModel(nn.Module):
    """``backbone`` (Linear + SyncBatchNorm) -> dropout -> ``head`` (Linear + LayerNorm + Linear)
    plus an ``nn.Embedding`` added as a bias; losses ``loss_mse`` and ``loss_l1`` (weighted)."""

    def __init__(self, cfg=None) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(IN_FEATURES, 16, bias=False), nn.SyncBatchNorm(16), nn.ReLU()
        )
        self.dropout = nn.Dropout(float(os.environ.get("TOY_DROPOUT", "0.1")))
        self.head = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))
        self.query_embed = nn.Embedding(1, 1)
        self.nan_at_iter = int(os.environ.get("TOY_NAN_ITER", "-1"))
        self.nan_grad_at_iter = int(os.environ.get("TOY_NAN_GRAD_ITER", "-1"))

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])
        pred = self.head(self.dropout(self.backbone(x))) + self.query_embed.weight
        if not self.training:
            return pred
        y = torch.stack([d["y"] for d in batch])
        losses = {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": 0.1 * (pred - y).abs().mean()}
        if any(d["iteration"] == self.nan_at_iter for d in batch):
            losses["loss_mse"] = losses["loss_mse"] * float("nan")
        if any(d["iteration"] == self.nan_grad_at_iter for d in batch):
            # adds 0 to the loss; its gradient 0 * (d sqrt / dx at 0 = inf) * 0 is NaN
            losses["loss_mse"] = losses["loss_mse"] + 0 * (0 * self.query_embed.weight).sqrt().sum()
        return losses


if "EngineToyModel" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(EngineToyModel)


def toy_samples(n: int = GLOBAL_SAMPLES) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, IN_FEATURES, generator=gen)
    y = x[:, :1] * 2.0 - x[:, 1:2] + 0.5
    return [{"x": x[i], "y": y[i]} for i in range(n)]


class ToyLoader:
    """Every iteration the same global batch; process r takes its contiguous share."""

    def __init__(self, samples_per_rank: int) -> None:
        rank = comm.get_rank()
        self.samples = toy_samples()[rank * samples_per_rank : (rank + 1) * samples_per_rank]

    def __iter__(self):
        iteration = 0
        while True:
            yield [{**s, "iteration": iteration} for s in self.samples]
            iteration += 1


class FailureInjection(HookBase):
    def before_step(self) -> None:
        it = self.trainer.iter
        if int(os.environ.get("TOY_KILL_ITER", "-1")) == it:
            os.kill(os.getpid(), signal.SIGKILL)
        if (
            int(os.environ.get("TOY_FAIL_ITER", "-1")) == it
            and int(os.environ.get("TOY_FAIL_RANK", "-1")) == comm.get_rank()
        ):
            raise RuntimeError(f"injected failure on rank {comm.get_rank()} at iteration {it}")


class ToyTrainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return ToyLoader(cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())

    @classmethod
    def test(cls, cfg, model):
        """Mean squared error on the training samples (every process evaluates its share)."""
        model.eval()
        with torch.no_grad():
            samples = toy_samples()
            errors = [
                float(((model([s]) - s["y"]) ** 2).sum())
                for s in samples[comm.get_rank() :: comm.get_world_size()]
            ]
        model.train()
        all_errors = [e for errs in comm.all_gather(errors) for e in errs]
        return OrderedDict(toy={"mse": sum(all_errors) / len(all_errors), "count": len(all_errors)})

    @classmethod
    def build_val_loss_loader(cls, cfg):
        """This process's share of the toy samples in batches of 2 (every process the same
        number of batches, so the validation loss is the same for any number of processes)."""
        samples = toy_samples()[comm.get_rank() :: comm.get_world_size()]
        batches = [samples[i : i + 2] for i in range(0, len(samples), 2)]
        return [[{**s, "iteration": None} for s in batch] for batch in batches]

    def build_hooks(self):
        return [FailureInjection()] + super().build_hooks()


def toy_cfg(output_dir: str, opts: list | None = None):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "EngineToyModel"
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.IMS_PER_BATCH = GLOBAL_SAMPLES
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 8
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SEED = 1
    cfg.OUTPUT_DIR = output_dir
    cfg.merge_from_list(opts or [])
    return cfg


def main(args) -> None:
    from mask2former.engine import default_setup

    cfg = toy_cfg(os.environ["TOY_OUTPUT_DIR"], args.opts)
    default_setup(cfg, args)
    torch.manual_seed(0)  # same initial weights in every run (rank 0's are broadcast anyway)
    trainer = ToyTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process():
        torch.save(results, os.path.join(cfg.OUTPUT_DIR, f"results_{comm.get_world_size()}.pth"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
    sys.exit(0)


def register_first_images(source: str, count: int) -> str:
    """Register ``<source>_first<count>``: the first ``count`` images of the registered dataset
    ``source``, with its metadata; returns the name (registered once per process)."""
    from mask2former.data import DatasetCatalog, MetadataCatalog

    name = f"{source}_first{count}"
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(source)[:count])
        fields = {k: v for k, v in vars(MetadataCatalog.get(source)).items() if k != "name"}
        MetadataCatalog.get(name).set(**fields)
    return name
