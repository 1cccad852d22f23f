#!/usr/bin/env python
"""Peak memory and time of one training step of R50 Mask2Former (COCO panoptic config,
133 classes, randomly initialised) at the large-scale-jitter size: 2 images of 1024x1024.

One step is what ``tools/train_net.py`` runs per iteration: the trainer's ``run_step``
(``SimpleTrainer``, or ``AMPTrainer`` for bfloat16 autocast) with the config's AdamW and
full-model gradient clipping: forward, matching, losses, backward, optimizer step. The batch
is synthetic and the same at every step: random pixels, each image cut into a 4x4 grid of
segments with random classes (a COCO panoptic image has about 11). On CUDA, peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps (the statistic mmdetection reports;
its R50 panoptic Mask2Former reports 13.9 GB at this setting); on a CPU the process's peak
resident size is printed instead, for information only.

    python benchmarks/training_step.py --device cuda --max-memory-gib 13.9
    python benchmarks/training_step.py --device cpu --size 256 --warmup 1 --steps 1

``--max-memory-gib`` exits non-zero when a CUDA peak exceeds it.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from _checks import verdict  # the sibling module of these scripts

from mask2former.config import get_cfg
from mask2former.engine import AMPTrainer, HookBase, SimpleTrainer
from mask2former.modeling import build_model
from mask2former.solver import build_optimizer
from mask2former.structures import Instances

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_THINGS = 80
GRID = 4  # segments per image: GRID x GRID


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--max-memory-gib", type=float, default=None)
    return p.parse_args()


def synthetic_batch(images: int, size: int, num_classes: int, seed: int = 0) -> list[dict]:
    """``images`` dicts as the LSJ panoptic mapper gives them: "image" (3, size, size) uint8
    and "instances" with ``gt_classes`` (GRID*GRID,) and ``gt_masks`` (GRID*GRID, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    cell = torch.arange(size) * GRID // size  # (size,) grid row/column of each pixel
    segment = (cell[:, None] * GRID + cell[None, :])[None]  # (1, size, size)
    masks = segment == torch.arange(GRID * GRID)[:, None, None]
    batch = []
    for _ in range(images):
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        classes = torch.randint(0, num_classes, (GRID * GRID,), generator=gen)
        instances = Instances((size, size), gt_classes=classes, gt_masks=masks.clone())
        batch.append({"image": image, "height": size, "width": size, "instances": instances})
    return batch


class StepTimer(HookBase):
    """Seconds of each step (CUDA synchronised) and the peak memory from step ``warmup`` on."""

    def __init__(self, device: str, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.seconds: list[float] = []

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def before_step(self) -> None:
        self._sync()
        if self.trainer.iter == self.warmup and self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()

    def after_step(self) -> None:
        self._sync()
        if self.trainer.iter >= self.warmup:
            self.seconds.append(time.perf_counter() - self._start)


def peak_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(model, optimizer, batch, args, precision: str) -> tuple[float, float]:
    """(median seconds per step, peak GiB) of ``args.steps`` steps after ``args.warmup``."""
    loader = itertools.repeat(batch)
    if precision == "bf16":
        trainer = AMPTrainer(model, loader, optimizer, precision=torch.bfloat16)
    else:
        trainer = SimpleTrainer(model, loader, optimizer)
    timer = StepTimer(args.device, args.warmup)
    trainer.register_hooks([timer])
    trainer.train(0, args.warmup + args.steps)
    return statistics.median(timer.seconds), peak_gib(args.device)


def main() -> int:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg, thing_ids=list(range(NUM_THINGS)))
    optimizer = build_optimizer(cfg, model)
    batch = synthetic_batch(args.images, args.size, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    memory = "peak GiB (max_memory_allocated)" if args.device == "cuda" else "process peak RSS GiB"
    print(
        f"R50 Mask2Former COCO panoptic, one training step of {args.images} images of "
        f"{args.size}x{args.size} on {where}, torch {torch.__version__}; median of {args.steps} "
        f"steps after {args.warmup}"
    )
    print(f"{'precision':<10}{'step ms':>10}  {memory}")
    too_big = []
    for precision in args.precisions:
        seconds, peak = measure(model, optimizer, batch, args, precision)
        print(f"{precision:<10}{seconds * 1e3:>10.0f}  {peak:.2f}", flush=True)
        if args.device == "cuda" and args.max_memory_gib is not None and peak > args.max_memory_gib:
            too_big.append(f"{precision}: {peak:.2f} GiB > {args.max_memory_gib} GiB")
    if args.device != "cuda":
        print("(CPU: resident size of the whole process, not comparable with GPU memory)")
        return 0
    if args.max_memory_gib is None:
        return 0
    return verdict(too_big, f"training-step memory goal (<= {args.max_memory_gib} GiB)")


if __name__ == "__main__":
    sys.exit(main())
