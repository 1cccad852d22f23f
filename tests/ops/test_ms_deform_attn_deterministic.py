"""Deterministic mode (``torch.use_deterministic_algorithms(True)``): the backward of every path
gives the same gradient bits on every run, and the same gradients as the default path.

Tolerances: float32 gradients within 1e-5 of the float64 reference relative to the largest
reference magnitude (as in test_ms_deform_attn_cpu.py) and within 1e-5 of the default path's
float32 gradients; float64 paths within 1e-12 of each other. The CUDA tests are skipped without
a GPU; on one they check the kernel's fixed-order sum (bit-identical over three runs, with many
samples landing on each pixel), the reference path and the forced reference under autograd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from mask2former.ops import (
    KernelPath,
    _extension,
    bilinear,
    force_reference_path,
    ms_deform_attn,
    ms_deform_attn_reference,
)
from tests.ops.conftest import deterministic_mode

FLOAT32_TOL = 1e-5


@contextlib.contextmanager
def num_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _grads(fn, inputs, grad_output) -> tuple[torch.Tensor, ...]:
    """Gradients of value, sampling_locations and attention_weights."""
    value, shapes, starts, loc, attn = (
        t.detach().requires_grad_(t.is_floating_point()) for t in inputs
    )
    output = fn(value, shapes, starts, loc, attn)
    return torch.autograd.grad(output, (value, loc, attn), grad_output.to(output.dtype))


def _assert_bit_identical(runs: list[tuple[torch.Tensor, ...]]) -> None:
    for run in runs[1:]:
        for name, a, b in zip(("value", "locations", "weights"), run, runs[0]):
            assert torch.equal(a, b), f"grad of {name} differs between runs"


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    scale = expected.abs().max().clamp_min(1.0)
    error = float((actual.double().cpu() - expected.double().cpu()).abs().max() / scale)
    assert error <= rel, f"{what}: max error {error:.3g} of max |ref| exceeds {rel:g}"


def _crowded_inputs(make_inputs, batch: int, heads: int, **kwargs):
    """Many samples per pixel (120 queries * 4 points on 16 + 4 pixels per head), so a sum whose
    order depended on the schedule would show it."""
    return make_inputs(batch, [(4, 4), (2, 2)], heads, 8, 120, 4, spread=0.1, **kwargs)


@pytest.fixture
def reference_path(monkeypatch):
    """The custom op computes with the pure-PyTorch reference, as without a compiled kernel."""
    monkeypatch.setattr(
        _extension, "select_path", lambda device, force_reference: KernelPath.REFERENCE
    )


# --------------------------------------------------------------------------- #
# CPU
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch, heads", [(1, 1), (2, 3)])
def test_cpu_kernel_deterministic_grads_same_bits_every_run_and_thread_count(
    cpu_kernel, make_inputs, batch, heads
):
    """With one (n, head) pair and two threads the default backward splits the queries between
    threads; deterministic mode does not, so one thread and two give the same bits."""
    inputs = _crowded_inputs(make_inputs, batch, heads, dtype=torch.float32)
    grad_output = torch.randn(batch, 120, heads * 8)
    with deterministic_mode():
        with num_threads(2):
            runs = [_grads(ms_deform_attn, inputs, grad_output) for _ in range(3)]
        with num_threads(1):
            runs.append(_grads(ms_deform_attn, inputs, grad_output))
    _assert_bit_identical(runs)


def test_cpu_kernel_deterministic_grads_match_default_and_reference(cpu_kernel, make_inputs):
    inputs = _crowded_inputs(make_inputs, 2, 3, dtype=torch.float64)
    grad_output = torch.randn(2, 120, 24, dtype=torch.float64)
    expected = _grads(ms_deform_attn_reference, inputs, grad_output)
    inputs32 = tuple(t.float() if t.is_floating_point() else t for t in inputs)
    default = _grads(ms_deform_attn, inputs32, grad_output)
    with deterministic_mode(), num_threads(2):
        actual = _grads(ms_deform_attn, inputs32, grad_output)
        actual64 = _grads(ms_deform_attn, inputs, grad_output)
    for name, a, d, e, a64 in zip(("value", "loc", "weights"), actual, default, expected, actual64):
        assert a.dtype == torch.float32
        _assert_close(a, e, FLOAT32_TOL, f"grad of {name} vs float64 reference")
        _assert_close(a, d, FLOAT32_TOL, f"grad of {name} vs default path")
        torch.testing.assert_close(a64, e, rtol=1e-12, atol=1e-12)


def test_reference_path_deterministic_grads(reference_path, make_inputs, monkeypatch):
    """Without a kernel, deterministic mode differentiates through gathers and index_add_ (no
    grid_sample backward, which has no deterministic CUDA implementation): same bits every run,
    the same gradients as grid_sample's backward."""
    calls = []
    sample_backward = bilinear.sample_backward
    monkeypatch.setattr(
        bilinear, "sample_backward", lambda *args: calls.append(1) or sample_backward(*args)
    )
    inputs = _crowded_inputs(make_inputs, 2, 3, dtype=torch.float64)
    grad_output = torch.randn(2, 120, 24, dtype=torch.float64)
    default = _grads(ms_deform_attn, inputs, grad_output)
    assert calls == []
    inputs32 = tuple(t.float() if t.is_floating_point() else t for t in inputs)
    with deterministic_mode(), num_threads(2):
        runs = [_grads(ms_deform_attn, inputs32, grad_output) for _ in range(3)]
        actual64 = _grads(ms_deform_attn, inputs, grad_output)
    assert len(calls) == 4 * 2  # once per level in each of the four backward passes
    _assert_bit_identical(runs)
    for name, a, d, a64 in zip(("value", "loc", "weights"), runs[0], default, actual64):
        _assert_close(a, d, FLOAT32_TOL, f"float32 grad of {name} vs grid_sample backward")
        torch.testing.assert_close(a64, d, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# Bilinear sampling by gathers
# --------------------------------------------------------------------------- #
def _grid_sample(value: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """grid_sample at loc (B, K, 2) in [0, 1] -> (B, D, K)."""
    grid = (2 * loc - 1).unsqueeze(1)
    return F.grid_sample(value, grid, padding_mode="zeros", align_corners=False).squeeze(2)


def _sampling_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """value (3, 5, 7, 6) and 60 locations, some outside, one NaN, some on pixel edges."""
    gen = torch.Generator().manual_seed(seed)
    value = torch.randn(3, 5, 7, 6, generator=gen, dtype=torch.float64)
    loc = torch.rand(3, 60, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.3
    loc[0, 0] = torch.tensor([0.5 / 6, 0.5 / 7])  # exactly on pixel (0, 0)
    loc[1, 1] = torch.tensor([1.0, 1.0])  # the far corner: only (y0, x0) inside
    loc[2, 2] = torch.tensor([1.5, -0.5])  # no corner inside
    return value, loc


def test_gather_sampling_and_its_autograd_match_grid_sample():
    value, loc = _sampling_inputs()
    grad = torch.randn(3, 5, 60, dtype=torch.float64)
    grads = []
    for fn in (bilinear.sample, _grid_sample):
        v, lo = value.clone().requires_grad_(), loc.clone().requires_grad_()
        out = fn(v, lo)
        grads.append((out.detach(), *torch.autograd.grad(out, (v, lo), grad)))
    for a, e in zip(*grads):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    manual = bilinear.sample_backward(grad, value, loc)
    for a, e in zip(manual, grads[1][1:]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_gather_sampling_nan_location_gives_zero_and_touches_no_pixel():
    value, loc = _sampling_inputs()
    loc[0, 5] = float("nan")
    grad = torch.zeros(3, 5, 60, dtype=torch.float64)
    grad[0, :, 5] = float("inf")  # only the NaN location gets a gradient
    assert torch.equal(bilinear.sample(value, loc)[0, :, 5], torch.zeros(5, dtype=torch.float64))
    grad_value, grad_loc = bilinear.sample_backward(grad, value, loc)
    assert torch.count_nonzero(grad_value) == 0 and torch.count_nonzero(grad_loc) == 0


# --------------------------------------------------------------------------- #
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------- #
CUDA_TOLERANCES = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _rounded(inputs, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The inputs as the CUDA kernel sees them (value and weights in ``dtype``, locations in
    float32), back in float64 on the CPU, for the reference."""
    value, shapes, starts, loc, attn = inputs
    return value.to(dtype).double(), shapes, starts, loc.float().double(), attn.to(dtype).double()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", list(CUDA_TOLERANCES), ids=str)
def test_cuda_kernel_deterministic_grads_same_bits_every_run(cuda_kernel, make_inputs, dtype):
    """Three runs give the same bits; the gradients match the default (atomic) path and the
    float64 reference within the gradient tolerances of test_ms_deform_attn_cuda.py."""
    inputs = _rounded(make_inputs(2, [(16, 16), (8, 8), (4, 4)], 4, 32, 2000, 4, spread=0.1), dtype)
    grad_output = torch.randn(2, 2000, 4 * 32, dtype=torch.float64).to(dtype)
    expected = _grads(ms_deform_attn_reference, inputs, grad_output.double())
    value, shapes, starts, loc, attn = (t.cuda() for t in inputs)
    on_gpu = (value.to(dtype), shapes, starts, loc.float(), attn.to(dtype))
    default = _grads(ms_deform_attn, on_gpu, grad_output.cuda())
    with deterministic_mode():
        runs = [_grads(ms_deform_attn, on_gpu, grad_output.cuda()) for _ in range(3)]
    _assert_bit_identical(runs)
    tol = CUDA_TOLERANCES[dtype]
    for name, a, d, e in zip(("value", "loc", "weights"), runs[0], default, expected):
        assert a.dtype == d.dtype
        _assert_close(a, d, tol, f"grad of {name} vs default path")
        _assert_close(a, e, tol, f"grad of {name} vs float64 reference")


@pytest.mark.cuda
def test_cuda_kernel_deterministic_float64_and_empty(cuda_kernel, make_inputs):
    inputs = _crowded_inputs(make_inputs, 2, 3)
    grad_output = torch.randn(2, 120, 24, dtype=torch.float64)
    expected = _grads(ms_deform_attn_reference, inputs, grad_output)
    with deterministic_mode():
        actual = _grads(ms_deform_attn, [t.cuda() for t in inputs], grad_output.cuda())
        value, shapes, starts, loc, attn = (t.cuda() for t in inputs)
        empty = _grads(
            ms_deform_attn,
            (value, shapes, starts, loc[:, :0], attn[:, :0]),
            grad_output[:, :0].cuda(),
        )
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.cpu(), e, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(empty[0]) == 0 and empty[1].numel() == empty[2].numel() == 0


@pytest.mark.cuda
def test_cuda_reference_path_deterministic(reference_path, make_inputs):
    """No grid_sample backward (torch refuses it on CUDA in deterministic mode)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    inputs = _crowded_inputs(make_inputs, 2, 3, dtype=torch.float32, device="cuda")
    grad_output = torch.randn(2, 120, 24, device="cuda")
    default = _grads(ms_deform_attn, inputs, grad_output)
    with deterministic_mode():
        runs = [_grads(ms_deform_attn, inputs, grad_output) for _ in range(3)]
    _assert_bit_identical(runs)
    for name, a, d in zip(("value", "loc", "weights"), runs[0], default):
        _assert_close(a, d, FLOAT32_TOL, f"grad of {name} vs grid_sample backward")


@pytest.mark.cuda
def test_cuda_forced_reference_autograd_deterministic(make_inputs):
    """Under force_reference_path autograd differentiates the reference itself; in deterministic
    mode it samples by gathers, whose CUDA backward torch allows."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    inputs = _crowded_inputs(make_inputs, 2, 3, dtype=torch.float32, device="cuda")
    grad_output = torch.randn(2, 120, 24, device="cuda")
    with force_reference_path():
        default = _grads(ms_deform_attn, inputs, grad_output)
        with deterministic_mode():
            runs = [_grads(ms_deform_attn, inputs, grad_output) for _ in range(3)]
    _assert_bit_identical(runs)
    for name, a, d in zip(("value", "loc", "weights"), runs[0], default):
        _assert_close(a, d, FLOAT32_TOL, f"grad of {name} vs grid_sample backward")
