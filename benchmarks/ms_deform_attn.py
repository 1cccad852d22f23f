"""Times multi-scale deformable attention: every available path against the pure-PyTorch
reference, measured interleaved in the same run.

Sizes are the Mask2Former pixel-decoder encoder's: 3 levels at strides 8/16/32 of a square
image, 8 heads x 32 channels, 4 points, batch 2, every pixel a query. Sampling locations follow
the encoder: each query's own pixel centre plus MSDeformAttn's initial offsets (point k at k+1
pixels along its head's direction) with unit Gaussian noise, in pixels of each level.

    python benchmarks/ms_deform_attn.py [--sizes 512 1024] [--repeats 3] [--devices cpu cuda]
        [--check]

Prints one row per (image size, device, path, dtype): median forward and forward+backward times,
the speed-up over the reference on the same device in float32, and the error against the
reference in float64 on the same inputs (rounded to the row's dtype first): the largest
absolute error over the largest magnitude, of the output and of the three input gradients.
``--check`` exits non-zero unless, at every size, each compiled kernel's float32 forward+backward
is at least ``--min-speedup`` times faster than the reference, and on CUDA bfloat16 and float16
are faster than float32, forward and forward+backward.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
from _checks import verdict  # the sibling module of these scripts

from mask2former.ops import (
    cpu_kernel_available,
    cuda_kernel_available,
    force_reference_path,
    ms_deform_attn,
    ms_deform_attn_reference,
)

HEADS, CHANNELS, POINTS, BATCH, STRIDES = 8, 32, 4, 2, (8, 16, 32)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def encoder_inputs(image_size: int, device: str, dtype: torch.dtype, seed: int = 0):
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)."""
    gen = torch.Generator().manual_seed(seed)
    levels = [(image_size // s, image_size // s) for s in STRIDES]
    shapes = torch.tensor(levels)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    # every pixel centre of every level is a query: (S, 2) as (x, y) in [0, 1]
    centres = torch.cat(
        [
            torch.stack(
                torch.meshgrid(
                    (torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h, indexing="xy"
                ),
                -1,
            ).reshape(-1, 2)
            for h, w in levels
        ]
    )
    s = centres.shape[0]
    thetas = torch.arange(HEADS) * (2 * math.pi / HEADS)
    direction = torch.stack([thetas.cos(), thetas.sin()], -1)
    direction = direction / direction.abs().max(-1, keepdim=True)[0]
    # offsets in pixels: (M, P, 2) init grid, broadcast over (N, S, M, L, P, 2), plus noise
    grid = direction[:, None, :] * torch.arange(1, POINTS + 1)[None, :, None]
    noise = torch.randn(BATCH, s, HEADS, len(levels), POINTS, 2, generator=gen)
    offsets = grid[:, None] + noise
    pixel = 1.0 / shapes.flip(-1).float()  # (L, 2) size of one pixel as (x, y)
    loc = centres[None, :, None, None, None, :] + offsets * pixel[None, None, None, :, None, :]
    logits = torch.randn(BATCH, s, HEADS, len(levels) * POINTS, generator=gen)
    attn = logits.softmax(-1).view(BATCH, s, HEADS, len(levels), POINTS)
    value = torch.randn(BATCH, s, HEADS, CHANNELS, generator=gen)
    return (
        value.to(device, dtype),
        shapes.to(device),
        starts.to(device),
        loc.to(device),
        attn.to(device, dtype),
    )


def _forward(inputs) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            ms_deform_attn(*inputs)

    return run


def _forward_backward(inputs) -> Callable[[], None]:
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    grad = torch.randn(leaves[0].shape[0], leaves[3].shape[1], HEADS * CHANNELS)
    grad = grad.to(leaves[0].device, leaves[0].dtype)

    def run() -> None:
        for t in leaves:
            t.grad = None
        ms_deform_attn(*leaves).backward(grad)

    return run


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.detach().abs().max().clamp_min(1e-12)
    return float((actual.detach().double() - expected.detach()).abs().max() / scale)


def float64_errors(inputs, dtype: torch.dtype, forced: bool) -> tuple[float, float]:
    """(output error, largest gradient error) of a path in ``dtype`` against the float64
    reference on the same inputs rounded to ``dtype`` (locations stay float32)."""
    value, shapes, starts, loc, attn = inputs
    grad = torch.randn(
        value.shape[0], loc.shape[1], HEADS * CHANNELS, generator=torch.Generator().manual_seed(1)
    )
    grad = grad.to(value.device, dtype)
    rounded = [value.to(dtype), shapes, starts, loc.float(), attn.to(dtype)]

    def run(fn, tensors, grad_output):
        leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in tensors]
        out = fn(*leaves)
        grads = torch.autograd.grad(out, (leaves[0], leaves[3], leaves[4]), grad_output)
        return out, grads

    as64 = [t.double() if t.is_floating_point() else t for t in rounded]
    expected, expected_grads = run(ms_deform_attn_reference, as64, grad.double())
    if forced:
        with force_reference_path():
            actual, grads = run(ms_deform_attn, rounded, grad)
    else:
        actual, grads = run(ms_deform_attn, rounded, grad)
    grad_error = max(_relative_error(a, e) for a, e in zip(grads, expected_grads))
    return _relative_error(actual, expected), grad_error


def _timed(fn: Callable[[], None], device: str, forced: bool) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if forced:
        with force_reference_path():
            fn()
    else:
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_device(image_size: int, device: str, repeats: int) -> list[tuple]:
    """Rows (size, device, path, dtype, fwd s, fwd+bwd s, fwd speed-up, fwd+bwd speed-up)."""
    paths = [("reference", torch.float32, True)]
    if device == "cpu" and cpu_kernel_available():
        paths.append(("C++ kernel", torch.float32, False))
    if device == "cuda" and cuda_kernel_available():
        paths += [("CUDA kernel", dtype, False) for dtype in CUDA_DTYPES]
    runs = {}
    for name, dtype, forced in paths:
        inputs = encoder_inputs(image_size, device, dtype)
        runs[name, dtype] = (_forward(inputs), _forward_backward(inputs), forced)
    times = {key: ([], []) for key in runs}
    for repeat in range(repeats + 1):  # the first round warms up and is discarded
        for key, (fwd, fwd_bwd, forced) in runs.items():  # interleaved
            for series, fn in zip(times[key], (fwd, fwd_bwd)):
                elapsed = _timed(fn, device, forced)
                if repeat > 0:
                    series.append(elapsed)
    base = [statistics.median(series) for series in times["reference", torch.float32]]
    rows = []
    for (name, dtype), series in times.items():
        fwd, fwd_bwd = (statistics.median(s) for s in series)
        errors = float64_errors(encoder_inputs(image_size, device, torch.float64), dtype, forced)
        rows.append(
            (image_size, device, name, dtype, fwd, fwd_bwd, base[0] / fwd, base[1] / fwd_bwd)
            + errors
        )
    return rows


def check_goals(rows: list[tuple], min_speedup: float) -> list[str]:
    """The goals ``--check`` applies (see the module docstring), as sentences of failures."""
    failures = []
    by_key = {(r[0], r[1], r[2], r[3]): r for r in rows}
    for size, device, name, dtype, fwd, fwd_bwd, _, up_bwd, *_ in rows:
        where = f"{size} {device} {name} {str(dtype).replace('torch.', '')}"
        if name != "reference" and dtype == torch.float32 and not up_bwd >= min_speedup:
            failures.append(
                f"{where}: forward+backward {up_bwd:.1f}x the reference < {min_speedup}x"
            )
        fp32 = by_key.get((size, device, name, torch.float32))
        if dtype != torch.float32 and fp32 is not None:
            if not (fwd < fp32[4] and fwd_bwd < fp32[5]):
                failures.append(
                    f"{where}: not faster than float32 ({fwd * 1e3:.2f} / {fwd_bwd * 1e3:.2f} ms "
                    f"vs {fp32[4] * 1e3:.2f} / {fp32[5] * 1e3:.2f} ms forward / forward+backward)"
                )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", choices=available, default=available)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--min-speedup", type=float, default=5.0)
    args = parser.parse_args()
    devices = args.devices
    gpu = f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu}; "
        f"CPU kernel built: {cpu_kernel_available()}, CUDA kernel built: {cuda_kernel_available()}"
    )
    header = (
        f"{'image':>6} {'device':>6} {'path':>12} {'dtype':>9} {'fwd ms':>9} {'x ref':>6} "
        f"{'fwd+bwd ms':>11} {'x ref':>6} {'out err':>8} {'grad err':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for size in args.sizes:
        for device in devices:
            for row in bench_device(size, device, args.repeats):
                size_, dev, name, dtype, fwd, fwd_bwd, up, up_bwd, err, grad_err = row
                dtype_name = str(dtype).replace("torch.", "")
                print(
                    f"{size_:>6} {dev:>6} {name:>12} {dtype_name:>9} {fwd * 1e3:>9.2f} "
                    f"{up:>6.1f} {fwd_bwd * 1e3:>11.2f} {up_bwd:>6.1f} {err:>8.1e} {grad_err:>8.1e}",
                    flush=True,
                )
                rows.append(row)
    print("errors: largest |error| / largest |float64 reference|, inputs rounded to the dtype")
    if not args.check:
        return 0
    return verdict(check_goals(rows, args.min_speedup), "deformable-attention goals")


if __name__ == "__main__":
    sys.exit(main())
