#!/usr/bin/env python
"""Inference latency: our Mask2Former against transformers' (R50 COCO panoptic by default).

Both models have the same size and the same weights (ours randomly initialised, converted
with ``mask2former.checkpoint.hf``); one image of 512x683 (default), forward pass
plus post-processing, measured in the same run, interleaved, median over
``--iters`` runs after ``--warmup``, on ``--device`` (CUDA is synchronised before and after each
timed stage). Each of ``--dtypes`` is measured in turn: float32, or for transformers the whole
call (forward and post-processing) under ``torch.autocast`` in bfloat16 / float16, for ours its
``TEST.PRECISION`` path (the forward under autocast, post-processing in float32). The
class head is scaled so that most queries are confident and the panoptic post-processing has
segments to build (random weights would keep none at the 0.8 threshold). Our deformable
attention uses the compiled kernel of the device when ``mask2former._C`` has it, else its
pure-PyTorch path (reported).

``--config`` picks another Mask2Former config that transformers can hold (a ResNet or Swin
backbone): a panoptic one is post-processed into panoptic segments as above, any other into a
semantic label map (our ``sem_seg`` scores and their argmax, against transformers'
``post_process_semantic_segmentation``), e.g.
``--config configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml``.

    PYTHONPATH=. python benchmarks/inference.py [--iters 5] [--threads N]
    PYTHONPATH=. python benchmarks/inference.py --device cuda --height 800 --width 1333 \
        --dtypes float32 bfloat16 --iters 10 --warmup 3 --min-speedup 2

``--min-speedup X`` exits non-zero when, for some dtype, ours is not X times faster (median
total time) than transformers'.
"""

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mask2former.checkpoint.hf import cfg_to_hf_config, ours_to_hf_state_dict
from mask2former.checkpoint.hf.components import hf_backbone_type
from mask2former.config import get_cfg
from mask2former.modeling import build_model
from mask2former.modeling.meta_arch.images import normalize_and_pad
from mask2former.ops._extension import cpu_kernel_available, cuda_kernel_available

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_THINGS = 80  # COCO panoptic: contiguous ids 0-79 are things, 80-132 stuff
CLASS_LOGIT_SCALE = 30.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=683)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32"])
    p.add_argument("--min-speedup", type=float, default=None)
    p.add_argument("--config", type=Path, default=CONFIG, help="a Mask2Former config file")
    return p.parse_args()


def build_ours(device: str, config: Path = CONFIG):
    """Our model in eval mode with panoptic output alone for a panoptic config, semantic
    output alone for any other; its class head scaled (see the module docstring)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    panoptic = cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = not panoptic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    torch.manual_seed(0)
    model = build_model(cfg, thing_ids=list(range(NUM_THINGS))).eval()
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.weight.mul_(CLASS_LOGIT_SCALE)
    return cfg, model


def build_hf(cfg, model, device: str):
    import transformers

    names = [f"class_{i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
    hf_config = cfg_to_hf_config(cfg, names)
    hf = transformers.Mask2FormerForUniversalSegmentation(hf_config).eval()
    state = ours_to_hf_state_dict(model.state_dict(), "mask2former", hf_backbone_type(cfg))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # BatchNorm counters, and the Swin's final norm, which its backbone outputs do not use
    unused = [
        k for k in missing if not k.endswith("num_batches_tracked") and ".swin.layernorm." not in k
    ]
    assert not unexpected and not unused, (unused, unexpected)
    processor = transformers.Mask2FormerImageProcessor()
    return hf.to(device), processor


def ours_stages(model, image):
    """(forward, post-processing) callables of one image; forward includes normalisation;
    post-processing gives the panoptic segmentation, or the semantic label map (H, W). They
    leave the caller's autocast: ours runs in ``model.inference_dtype`` (``TEST.PRECISION``:
    its own autocast of the forward, float32 post-processing)."""
    h, w = image.shape[-2:]
    inputs = [{"image": image, "height": h, "width": w}]
    state = {}

    def forward():
        with torch.autocast(image.device.type, enabled=False):
            images = normalize_and_pad(inputs, model.pixel_mean, model.pixel_std, 32)
            state["images"] = images
            state["outputs"] = model.predict(images.tensor)

    def post():
        with torch.autocast(image.device.type, enabled=False):
            result = model.inference(state["outputs"], inputs, state["images"])[0]
        return result["panoptic_seg"] if model.panoptic_on else result["sem_seg"].argmax(0)

    return forward, post


def hf_stages(hf, processor, image, mean, std, panoptic: bool = True):
    """(forward, post-processing) callables of one image for transformers' model."""
    h, w = image.shape[-2:]
    state = {}

    def forward():
        # transformers' processor: normalise, then pad to a multiple of 32 (as ours does).
        pixels = (image.float() - mean) / std
        pixels = F.pad(pixels, (0, -w % 32, 0, -h % 32))[None]
        state["outputs"] = hf(pixel_values=pixels)

    def post():
        if not panoptic:
            return processor.post_process_semantic_segmentation(
                state["outputs"], target_sizes=[(h, w)]
            )[0]
        return processor.post_process_panoptic_segmentation(
            state["outputs"],
            threshold=0.8,
            overlap_mask_area_threshold=0.8,
            label_ids_to_fuse=set(range(NUM_THINGS, len(hf.config.id2label))),
            target_sizes=[(h, w)],
        )[0]

    return forward, post


def autocast(device: str, dtype: torch.dtype):
    """The context a stage runs in: none for float32, else autocast to ``dtype``."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


def time_once(fn, device: str, dtype: torch.dtype) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast(device, dtype):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(stages: dict, warmup: int, iters: int, device: str, dtype: torch.dtype) -> dict:
    """Seconds per (implementation, stage), implementations interleaved per iteration."""
    times = {name: {"forward": [], "post": [], "total": []} for name in stages}
    for i in range(warmup + iters):
        for name, (forward, post) in stages.items():
            t_forward = time_once(forward, device, dtype)
            t_post = time_once(post, device, dtype)
            if i >= warmup:
                times[name]["forward"].append(t_forward)
                times[name]["post"].append(t_post)
                times[name]["total"].append(t_forward + t_post)
    return times


def peak_memory_mib(stages: dict, device: str, dtype: torch.dtype) -> dict[str, float]:
    """Peak CUDA memory (MiB) of one forward + post-processing per implementation."""
    if device != "cuda":
        return {}
    peaks = {}
    for name, (forward, post) in stages.items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with autocast(device, dtype):
            forward()
            post()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def header(args) -> str:
    if args.device == "cuda":
        kernel = "CUDA kernel" if cuda_kernel_available() else "pure PyTorch"
        where = (
            f"{torch.cuda.get_device_name()}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}"
            f" / cuDNN {torch.backends.cudnn.allow_tf32}"
        )
    else:
        kernel = "compiled CPU kernel" if cpu_kernel_available() else "pure PyTorch"
        where = "CPU"
    return (
        f"{args.config.stem} ({task(args.config)}), {args.height}x{args.width}, {where}, "
        f"{args.threads} "
        f"CPU threads, median of {args.iters} runs after {args.warmup}; torch {torch.__version__}; "
        f"our deformable attention: {kernel}"
    )


def task(config: Path) -> str:
    """ "panoptic" or "semantic": what the benchmark post-processes for this config."""
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    return "panoptic" if cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON else "semantic"


def report(times: dict, dtype: str, segments: dict, peaks: dict) -> float:
    """Prints the rows of one dtype; returns the speed-up (transformers / ours, median total)."""
    for name, t in times.items():
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        peak = f"{peaks[name]:>10.0f}" if name in peaks else f"{'-':>10}"
        print(
            f"{dtype:<10}{name:<14}{med['forward']:>12.1f}{med['post']:>10.1f}{med['total']:>10.1f}"
            f"{min(t['total']) * 1e3:>10.1f}{peak}{segments[name]:>10}"
        )
    ratio = statistics.median(times["transformers"]["total"]) / statistics.median(
        times["ours"]["total"]
    )
    print(f"{dtype:<10}speed-up (transformers median total / ours median total): {ratio:.2f}x")
    return ratio


def count_segments(stages: dict, device: str, dtype: torch.dtype) -> dict[str, int]:
    """Panoptic segments, or classes in the semantic label map, each implementation finds (a
    sanity check that both do the work)."""
    counts = {}
    with autocast(device, dtype):
        for name, (forward, post) in stages.items():
            forward()
            result = post()
            if isinstance(result, torch.Tensor):  # a semantic label map
                counts[name] = len(result.unique())
            else:  # ours: (map, infos); transformers': {"segmentation", "segments_info"}
                counts[name] = len(
                    result[1] if isinstance(result, tuple) else result["segments_info"]
                )
    return counts


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    cfg, ours = build_ours(args.device, args.config)
    hf, processor = build_hf(cfg, ours, args.device)
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand(3, args.height, args.width, generator=generator) * 255).to(torch.uint8)
    image = image.to(args.device)
    stages = {
        "ours": ours_stages(ours, image),
        "transformers": hf_stages(
            hf, processor, image, ours.pixel_mean, ours.pixel_std, ours.panoptic_on
        ),
    }
    print(header(args))
    print(
        f"{'dtype':<10}{'implementation':<14}{'forward ms':>12}{'post ms':>10}{'total ms':>10}"
        f"{'min ms':>10}{'peak MiB':>10}{'segments' if ours.panoptic_on else 'classes':>10}"
    )
    speedups = {}
    with torch.inference_mode():
        for name in args.dtypes:
            dtype = DTYPES[name]
            ours.inference_dtype = dtype  # transformers': the stages run under autocast
            segments = count_segments(stages, args.device, dtype)
            times = measure(stages, args.warmup, args.iters, args.device, dtype)
            peaks = peak_memory_mib(stages, args.device, dtype)
            speedups[name] = report(times, name, segments, peaks)
    if args.min_speedup is None:
        return 0
    slow = {k: v for k, v in speedups.items() if not v >= args.min_speedup}
    for name, ratio in slow.items():
        print(f"FAILED: {name}: ours is {ratio:.2f}x transformers' speed, goal {args.min_speedup}x")
    print(f"inference goal (>= {args.min_speedup}x):", "FAILED" if slow else "passed")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
