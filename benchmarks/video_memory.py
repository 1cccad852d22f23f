#!/usr/bin/env python
"""Peak memory of VideoMaskFormer inference on long videos: clip by clip against whole-video.

A small video model (the published YouTube-VIS R50 config shrunk like the image quick start:
ResNet-18, 64 channels, 1 encoder layer, 3 decoder layers, 16 queries; random weights) runs
on CPU over synthetic frames (discs moving over a gradient, generated as they are read, never
stored) of ``--height`` x ``--width``. Each case runs in a fresh subprocess, which reports its
peak resident set size (``ru_maxrss``) after building the model and at the end:

- ``clip``: ``MODEL.MASK_FORMER.TEST.CLIP_LENGTH`` ``--clip-length`` (overlap
  ``--clip-overlap``), frames handed over as a generator; the output keeps every track's
  masks as RLEs (``RLEMasks``);
- ``whole``: the published inference, all frames at once (they are then all in memory, as
  the published model needs them).

    PYTHONPATH=. python benchmarks/video_memory.py  # clip: 50, 200, 1000 frames; whole: 50, 200
    PYTHONPATH=. python benchmarks/video_memory.py --whole-frames --mmap-threshold 131072

``--mmap-threshold BYTES`` runs the cases with ``MALLOC_MMAP_THRESHOLD_=BYTES`` (glibc): every
allocation above it gets its own mapping, returned to the system when freed. With glibc's
default (a threshold that rises to the largest buffer freed, up to 32 MiB) most of a clip's
buffers come from the heap, which fragments and rarely shrinks: the peak creeps up with the
number of clips (whether the predictions are kept or not), more slowly as the video goes on.

Times are printed too (wall seconds of the inference, 1 thread by default): indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"
SMALL = {
    "MODEL.DEVICE": "cpu",
    "MODEL.WEIGHTS": "",
    "MODEL.RESNETS.DEPTH": 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 64,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 64,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 1,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 64,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 16,
    "MODEL.MASK_FORMER.NHEADS": 4,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 256,
    "MODEL.MASK_FORMER.DEC_LAYERS": 4,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip-frames", type=int, nargs="*", default=[50, 200, 1000])
    p.add_argument("--whole-frames", type=int, nargs="*", default=[50, 200])
    p.add_argument("--clip-length", type=int, default=20)
    p.add_argument("--clip-overlap", type=int, default=2)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES")
    p.add_argument("--case", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_frame(t: int, height: int, width: int) -> torch.Tensor:
    """Frame ``t``: (3, H, W) float 0-255, two discs moving across a colour gradient."""
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    frame = torch.stack(
        [(xs / width * 200).expand(height, width), (ys / height * 200).expand(height, width)]
        + [torch.full((height, width), 90.0)]
    )
    for k, (speed, radius) in enumerate(((3.0, height / 6), (-2.0, height / 8))):
        cx = (width / 4 + k * width / 2 + speed * t) % width
        cy = height / 2 + (height / 4) * (1 if k else -1) * 0.5
        disc = (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
        frame[:, disc] = torch.tensor([230.0, 60.0 + 120 * k, 40.0])[:, None]
    return frame


def build_small_model(clip_length: int, clip_overlap: int):
    from mask2former.config import get_cfg
    from mask2former.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    overrides = {
        **SMALL,
        "MODEL.MASK_FORMER.TEST.CLIP_LENGTH": clip_length,
        "MODEL.MASK_FORMER.TEST.CLIP_OVERLAP": clip_overlap,
    }
    cfg.merge_from_list([item for kv in overrides.items() for item in kv])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def run_case(args: argparse.Namespace) -> None:
    """In the subprocess: one inference, one JSON line on stdout."""
    mode, num_frames = args.case[0], int(args.case[1])
    torch.set_num_threads(args.threads)
    model = build_small_model(args.clip_length if mode == "clip" else 0, args.clip_overlap)
    before = peak_rss_mib()
    frames = (synthetic_frame(t, args.height, args.width) for t in range(num_frames))
    if mode == "whole":  # the published inference takes every frame at once
        frames = list(frames)
    start = time.perf_counter()
    with torch.no_grad():
        out = model([{"image": frames}])
    seconds = time.perf_counter() - start
    rle_bytes = sum(
        len(r["counts"]) for m in out["pred_masks"] if hasattr(m, "rles") for r in m.rles
    )
    shapes = {tuple(m.shape) for m in out["pred_masks"]}
    record = {"before_mib": before, "peak_mib": peak_rss_mib(), "seconds": seconds}
    record.update(instances=len(out["pred_masks"]), shapes=sorted(shapes), rle_bytes=rle_bytes)
    print(json.dumps(record))


def run_in_subprocess(args: argparse.Namespace, mode: str, num_frames: int) -> dict:
    command = [sys.executable, __file__, "--case", mode, str(num_frames)]
    command += ["--clip-length", str(args.clip_length), "--clip-overlap", str(args.clip_overlap)]
    command += ["--height", str(args.height), "--width", str(args.width)]
    command += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {num_frames} frames failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        run_case(args)
        return 0
    cases = [("clip", n) for n in args.clip_frames] + [("whole", n) for n in args.whole_frames]
    print(
        f"VideoMaskFormer (small, random weights) on CPU, {args.height}x{args.width} frames, "
        f"clips of {args.clip_length} frames sharing {args.clip_overlap}, "
        f"{args.threads} thread(s); each case in a fresh process"
        + (f", MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else "")
    )
    print("| inference | frames | peak RSS | model built | inference adds | s/frame | RLE kB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, num_frames in cases:
        r = run_in_subprocess(args, mode, num_frames)
        name = f"clips of {args.clip_length}" if mode == "clip" else "whole video"
        print(
            f"| {name} | {num_frames} | {r['peak_mib']:.0f} MiB | {r['before_mib']:.0f} MiB | "
            f"{r['peak_mib'] - r['before_mib']:.0f} MiB | {r['seconds'] / num_frames:.2f} | "
            f"{r['rle_bytes'] / 1000:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
