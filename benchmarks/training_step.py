#!/usr/bin/env python
"""Peak memory and time of one training step of R50 Mask2Former (COCO panoptic config,
133 classes, randomly initialised) at the large-scale-jitter size: 2 images of 1024x1024.

One step is what ``tools/train_net.py`` runs per iteration: the trainer's ``run_step``
(``SimpleTrainer``, or ``AMPTrainer`` for bfloat16 autocast) with the config's AdamW and
full-model gradient clipping: forward, matching, losses, backward, optimizer step. The batch
is synthetic and the same at every step: random pixels, each image cut into a grid of
``--segments`` segments with random classes (a COCO panoptic image has about 11). On CUDA,
peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps (the statistic
mmdetection reports; its R50 panoptic Mask2Former reports 13.9 GB at this setting); on a CPU
the process's peak resident size is printed instead, for information only.

``--transformers`` also times transformers' ``Mask2FormerForUniversalSegmentation`` with the
same weights (converted by ``mask2former.checkpoint.hf``) on the same batch, one of its steps
after each of ours (interleaved, medians): its loss from ``mask_labels`` / ``class_labels``
(the same matcher and loss weights and sampled points, converted from our config), backward,
the same gradient clipping and AdamW (one parameter group of the config's learning rate and
weight decay; ``torch.optim.AdamW`` with its defaults, as transformers' ``Trainer`` makes it
by default, while ours is ``build_optimizer``'s, fused on a CPU). Its ResNet has
``BatchNorm2d`` where ours has ``FrozenBatchNorm2d``: they run in eval mode with frozen affine
terms, so that both compute and train the same function.
Float32 only; ``--min-speedup X`` exits non-zero when ours is not X times faster.

    python benchmarks/training_step.py --device cuda --max-memory-gib 13.9
    python benchmarks/training_step.py --device cpu --size 256 --warmup 1 --steps 1
    python benchmarks/training_step.py --device cpu --size 384 --segments 8 --precisions fp32 \
        --transformers --warmup 1 --steps 5

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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--segments", type=int, default=16, help="segments per image (a grid)")
    p.add_argument("--max-memory-gib", type=float, default=None)
    p.add_argument("--transformers", action="store_true", help="also time transformers' step")
    p.add_argument("--min-speedup", type=float, default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def grid_shape(segments: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``segments`` cells, as square as the divisors allow."""
    rows = max(r for r in range(1, int(segments**0.5) + 1) if segments % r == 0)
    return rows, segments // rows


def synthetic_batch(images: int, size: int, num_classes: int, segments: int, seed: int = 0):
    """``images`` dicts as the LSJ panoptic mapper gives them: "image" (3, size, size) uint8
    and "instances" with ``gt_classes`` (segments,) and ``gt_masks`` (segments, size, size),
    the cells of a grid."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = grid_shape(segments)
    # (size, size): the grid cell of each pixel
    cell = (torch.arange(size) * rows // size)[:, None] * cols + torch.arange(size) * cols // size
    masks = cell[None] == torch.arange(segments)[:, None, None]
    batch = []
    for _ in range(images):
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        classes = torch.randint(0, num_classes, (segments,), generator=gen)
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


class TransformersStep(HookBase):
    """After each of our steps, one training step of transformers' model on the same batch."""

    def __init__(self, hf, optimizer, clip: float, batch: list[dict], model, warmup: int):
        self.hf, self.optimizer, self.clip, self.warmup = hf, optimizer, clip, warmup
        # transformers' processor: pixels normalised (sizes are multiples of 32: no padding)
        self.pixels = torch.stack(
            [(x["image"].float() - model.pixel_mean) / model.pixel_std for x in batch]
        )
        self.mask_labels = [x["instances"].gt_masks.float() for x in batch]
        self.class_labels = [x["instances"].gt_classes for x in batch]
        self.seconds: list[float] = []

    def after_step(self) -> None:
        start = time.perf_counter()
        loss = self.hf(
            pixel_values=self.pixels, mask_labels=self.mask_labels, class_labels=self.class_labels
        ).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.hf.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.optimizer.step()
        if self.trainer.iter >= self.warmup:
            self.seconds.append(time.perf_counter() - start)


def build_transformers(cfg, model) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """transformers' model with our weights in training mode (its BatchNorms frozen, see the
    module docstring) and its AdamW."""
    import transformers

    from mask2former.checkpoint.hf import cfg_to_hf_config, ours_to_hf_state_dict

    names = [f"class_{i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
    hf = transformers.Mask2FormerForUniversalSegmentation(cfg_to_hf_config(cfg, names))
    state = ours_to_hf_state_dict(model.state_dict(), "mask2former", "resnet")
    _, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    hf.train()
    for module in hf.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
            module.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        [p for p in hf.parameters() if p.requires_grad],
        lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
    return hf, optimizer


def measure(model, optimizer, batch, args, precision: str, reference=None) -> tuple:
    """(median seconds per step, peak GiB, transformers' median seconds per step or None) of
    ``args.steps`` steps after ``args.warmup``."""
    loader = itertools.repeat(batch)
    if precision == "bf16":
        trainer = AMPTrainer(model, loader, optimizer, precision=torch.bfloat16)
    else:
        trainer = SimpleTrainer(model, loader, optimizer)
    timer = StepTimer(args.device, args.warmup)
    hooks = [timer] if reference is None else [timer, reference]
    trainer.register_hooks(hooks)
    trainer.train(0, args.warmup + args.steps)
    theirs = None if reference is None else statistics.median(reference.seconds)
    return statistics.median(timer.seconds), peak_gib(args.device), theirs


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    if args.transformers and (args.device != "cpu" or args.precisions != ["fp32"]):
        sys.exit("--transformers compares float32 steps on the CPU: add --precisions fp32")
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg, thing_ids=list(range(NUM_THINGS)))
    optimizer = build_optimizer(cfg, model)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    batch = synthetic_batch(args.images, args.size, num_classes, args.segments)
    reference = None
    if args.transformers:
        hf, hf_optimizer = build_transformers(cfg, model)
        clip = cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE
        reference = TransformersStep(hf, hf_optimizer, clip, batch, model, args.warmup)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    memory = "peak GiB (max_memory_allocated)" if args.device == "cuda" else "process peak RSS GiB"
    print(
        f"R50 Mask2Former COCO panoptic, one training step of {args.images} images of "
        f"{args.size}x{args.size} with {args.segments} segments each on {where}, "
        f"{args.threads} threads, torch {torch.__version__}; median of {args.steps} steps "
        f"after {args.warmup}"
    )
    print(f"{'precision':<10}{'step ms':>10}  {memory}")
    too_big = []
    for precision in args.precisions:
        seconds, peak, theirs = measure(model, optimizer, batch, args, precision, reference)
        print(f"{precision:<10}{seconds * 1e3:>10.0f}  {peak:.2f}", flush=True)
        if args.device == "cuda" and args.max_memory_gib is not None and peak > args.max_memory_gib:
            too_big.append(f"{precision}: {peak:.2f} GiB > {args.max_memory_gib} GiB")
    failures = too_big
    if theirs is not None:
        ratio = theirs / seconds
        print(f"{'transformers':<10}{theirs * 1e3:>10.0f}  (same weights, batch, loss terms)")
        print(f"speed-up (transformers median step / ours median step): {ratio:.2f}x")
        if args.min_speedup is not None and not ratio >= args.min_speedup:
            failures.append(f"ours is {ratio:.2f}x transformers' speed, goal {args.min_speedup}x")
    if args.device != "cuda":
        print("(CPU: resident size of the whole process, not comparable with GPU memory)")
    goals = [f"memory (<= {args.max_memory_gib} GiB)"] if args.max_memory_gib is not None else []
    goals += [f"speed-up (>= {args.min_speedup}x)"] if args.min_speedup is not None else []
    if not goals:
        return 0
    return verdict(failures, f"training-step goals: {', '.join(goals)}")


if __name__ == "__main__":
    sys.exit(main())
