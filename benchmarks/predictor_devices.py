#!/usr/bin/env python
"""The predictor gives the same result on the GPU as on the CPU: ``DefaultPredictor`` with
``MODEL.DEVICE cuda`` against ``MODEL.DEVICE cpu``, the same weights and images, within 1e-3.

The model is the quick start's (``configs/shapes/mask2former_R18_quickstart.yaml``) with
``--weights`` (e.g. a quick-start ``model_final.pth``; without, seeded random weights, which
keep few segments), on ``--images`` validation images of the shapes dataset. Per image:

- ``sem_seg`` (C, H, W) probabilities: the largest absolute difference;
- ``panoptic_seg``: the share of pixels whose category (via ``segments_info``) differs;
- ``instances``: the largest score difference and the share of mask pixels that differ (masks
  in the predictor's order).

Each must be at most ``--tol``. On CUDA the comparison runs with TF32 off (checked) and again
with torch's TF32 defaults (cuDNN convolutions in TF32: reported only).

    python benchmarks/predictor_devices.py --device cuda --weights output/.../model_final.pth
    python benchmarks/predictor_devices.py --device cpu   # CPU: C++ kernel vs pure PyTorch

With ``--device cpu`` (no GPU) the second predictor also runs on the CPU, its deformable
attention forced to the pure-PyTorch path, so the comparison and its exit code are exercised.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import cv2
import torch
from _checks import verdict  # the sibling module of these scripts

from mask2former.config import get_cfg
from mask2former.data.datasets.builtin import datasets_root
from mask2former.data.datasets.shapes import ensure_shapes_dataset
from mask2former.engine import DefaultPredictor
from mask2former.ops import force_reference_path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/shapes/mask2former_R18_quickstart.yaml"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--weights", default="", help="checkpoint; default: seeded random weights")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--tol", type=float, default=1e-3)
    return p.parse_args()


def make_predictor(device: str, weights: str) -> DefaultPredictor:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = weights
    torch.manual_seed(0)  # the same random weights on both devices when none are given
    return DefaultPredictor(cfg)


def category_map(panoptic) -> torch.Tensor:
    """(H, W) category of each pixel's segment, -1 where no segment."""
    ids, segments = panoptic
    ids = ids.cpu()
    out = torch.full_like(ids, -1, dtype=torch.int64)
    for seg in segments:
        out[ids == seg["id"]] = seg["category_id"]
    return out


def differences(a: dict, b: dict) -> dict[str, float]:
    """The four compared quantities (see the module docstring) between two outputs."""
    diff = {"sem_seg": float((a["sem_seg"].cpu() - b["sem_seg"].cpu()).abs().max())}
    diff["panoptic"] = float(
        (category_map(a["panoptic_seg"]) != category_map(b["panoptic_seg"])).float().mean()
    )
    ia, ib = a["instances"].to("cpu"), b["instances"].to("cpu")
    if len(ia) != len(ib):
        diff["scores"] = diff["masks"] = float("inf")
        return diff
    diff["scores"] = float((ia.scores - ib.scores).abs().max()) if len(ia) else 0.0
    diff["masks"] = float((ia.pred_masks != ib.pred_masks).float().mean()) if len(ia) else 0.0
    return diff


def compare(images, reference: DefaultPredictor, other: DefaultPredictor, context) -> dict:
    """Largest difference of each quantity over the images, and the segments found."""
    worst = {"sem_seg": 0.0, "panoptic": 0.0, "scores": 0.0, "masks": 0.0}
    segments = 0
    for image in images:
        expected = reference(image)
        with context():
            actual = other(image)
        segments += len(expected["panoptic_seg"][1])
        for key, value in differences(expected, actual).items():
            worst[key] = max(worst[key], value)
    return {**worst, "segments": segments}


def set_tf32(enabled: bool | None) -> None:
    """TF32 for matmuls and cuDNN: on, off, or (None) torch's defaults."""
    matmul, cudnn = (False, True) if enabled is None else (enabled, enabled)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def main() -> int:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible")
    val = Path(ensure_shapes_dataset(datasets_root())) / "val"
    paths = sorted(val.glob("*.jpg"))[: args.images]
    images = [cv2.imread(str(p)) for p in paths]
    cpu = make_predictor("cpu", args.weights)
    other = make_predictor(args.device, args.weights)
    if args.device == "cuda":
        settings = [("cuda, TF32 off", False, contextlib.nullcontext, True)]
        settings.append(("cuda, torch TF32 defaults", None, contextlib.nullcontext, False))
        where = torch.cuda.get_device_name()
    else:
        settings = [("cpu, pure-PyTorch attention", None, force_reference_path, True)]
        where = "CPU only (no GPU): C++ kernel against the pure-PyTorch path"
    weights = args.weights or "seeded random weights"
    print(f"DefaultPredictor, quick-start model ({weights}), {len(images)} shapes val images")
    print(f"reference: MODEL.DEVICE cpu; compared: {where}; tolerance {args.tol:g}")
    header = (
        f"{'compared':<28}{'sem_seg':>10}{'panoptic':>10}{'scores':>10}{'masks':>10}"
        f"{'segments':>10}{'checked':>9}"
    )
    print(header)
    print("-" * len(header))
    failures = []
    for name, tf32, context, checked in settings:
        if args.device == "cuda":
            set_tf32(tf32)
        result = compare(images, cpu, other, context)
        print(
            f"{name:<28}{result['sem_seg']:>10.2e}{result['panoptic']:>10.2e}"
            f"{result['scores']:>10.2e}{result['masks']:>10.2e}{result['segments']:>10}"
            f"{'yes' if checked else 'no':>9}"
        )
        bad = [k for k in ("sem_seg", "panoptic", "scores", "masks") if not result[k] <= args.tol]
        if checked and bad:
            failures.append(f"{name}: {', '.join(bad)} above {args.tol:g}")
    print(
        "sem_seg, scores: largest absolute difference; panoptic, masks: share of pixels that "
        "differ; segments: panoptic segments of the reference over all images"
    )
    return verdict(failures, "predictor device check")


if __name__ == "__main__":
    sys.exit(main())
