#!/usr/bin/env python
"""CPU inference latency: our R50 Mask2Former (COCO panoptic) against transformers'.

Both models have the same size and the same weights (ours randomly initialised, converted
with ``mask2former.checkpoint.hf``); one image of 512x683 (default), forward pass
plus panoptic post-processing, measured in the same run, interleaved, median over
``--iters`` runs after ``--warmup``. The class head is scaled so that most queries are
confident and the panoptic post-processing has segments to build (random weights would keep
none at the 0.8 threshold). Our deformable attention uses the compiled CPU kernel when
``mask2former._C`` is built (``pip install -e .``), else its pure-PyTorch path (reported).

    PYTHONPATH=. python benchmarks/inference.py [--iters 5] [--threads N]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mask2former.checkpoint.hf import cfg_to_hf_config, ours_to_hf_state_dict
from mask2former.config import get_cfg
from mask2former.modeling import build_model
from mask2former.modeling.meta_arch.images import normalize_and_pad
from mask2former.ops._extension import cpu_kernel_available

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_THINGS = 80  # COCO panoptic: contiguous ids 0-79 are things, 80-132 stuff
CLASS_LOGIT_SCALE = 30.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=683)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def build_ours():
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    torch.manual_seed(0)
    model = build_model(cfg, thing_ids=list(range(NUM_THINGS))).eval()
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.weight.mul_(CLASS_LOGIT_SCALE)
    return cfg, model


def build_hf(cfg, model):
    import transformers

    names = [f"class_{i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
    hf_config = cfg_to_hf_config(cfg, names)
    hf = transformers.Mask2FormerForUniversalSegmentation(hf_config).eval()
    state = ours_to_hf_state_dict(model.state_dict(), "mask2former", "resnet")
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    processor = transformers.Mask2FormerImageProcessor()
    return hf, processor


def ours_stages(model, image):
    """(forward, post-processing) callables of one image; forward includes normalisation."""
    h, w = image.shape[-2:]
    inputs = [{"image": image, "height": h, "width": w}]
    state = {}

    def forward():
        images = normalize_and_pad(inputs, model.pixel_mean, model.pixel_std, 32)
        state["images"] = images
        state["outputs"] = model.sem_seg_head(model.backbone(images.tensor))

    def post():
        return model.inference(state["outputs"], inputs, state["images"])[0]["panoptic_seg"]

    return forward, post


def hf_stages(hf, processor, image, mean, std):
    """(forward, post-processing) callables of one image for transformers' model."""
    h, w = image.shape[-2:]
    state = {}

    def forward():
        # transformers' processor: normalise, then pad to a multiple of 32 (as ours does).
        pixels = (image.float() - mean) / std
        pixels = F.pad(pixels, (0, -w % 32, 0, -h % 32))[None]
        state["outputs"] = hf(pixel_values=pixels)

    def post():
        return processor.post_process_panoptic_segmentation(
            state["outputs"],
            threshold=0.8,
            overlap_mask_area_threshold=0.8,
            label_ids_to_fuse=set(range(NUM_THINGS, len(hf.config.id2label))),
            target_sizes=[(h, w)],
        )[0]

    return forward, post


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(stages: dict, warmup: int, iters: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per (implementation, stage), implementations interleaved per iteration."""
    times = {name: {"forward": [], "post": [], "total": []} for name in stages}
    for i in range(warmup + iters):
        for name, (forward, post) in stages.items():
            t_forward, t_post = time_once(forward), time_once(post)
            if i >= warmup:
                times[name]["forward"].append(t_forward)
                times[name]["post"].append(t_post)
                times[name]["total"].append(t_forward + t_post)
    return times


def report(args, times, segments: int) -> None:
    kernel = "compiled CPU kernel" if cpu_kernel_available() else "pure PyTorch"
    print(
        f"R50 Mask2Former COCO panoptic, {args.height}x{args.width}, CPU, {args.threads} "
        f"threads, median of {args.iters} runs; our deformable attention: {kernel}; "
        f"{segments} panoptic segments"
    )
    print(f"{'implementation':<16}{'forward ms':>12}{'post ms':>10}{'total ms':>10}{'min ms':>10}")
    for name, t in times.items():
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        print(
            f"{name:<16}{med['forward']:>12.1f}{med['post']:>10.1f}{med['total']:>10.1f}"
            f"{min(t['total']) * 1e3:>10.1f}"
        )
    ratio = statistics.median(times["transformers"]["total"]) / statistics.median(
        times["ours"]["total"]
    )
    print(f"speed-up (transformers median total / ours median total): {ratio:.2f}x")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg, ours = build_ours()
    hf, processor = build_hf(cfg, ours)
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand(3, args.height, args.width, generator=generator) * 255).to(torch.uint8)
    stages = {
        "ours": ours_stages(ours, image),
        "transformers": hf_stages(hf, processor, image, ours.pixel_mean, ours.pixel_std),
    }
    with torch.inference_mode():
        stages["ours"][0]()
        segments = len(stages["ours"][1]()[1])
        times = measure(stages, args.warmup, args.iters)
    report(args, times, segments)


if __name__ == "__main__":
    main()
