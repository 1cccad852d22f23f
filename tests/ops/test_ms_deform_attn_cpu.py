"""The C++ CPU kernel against the pure-PyTorch reference (grid_sample), forward and backward."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from mask2former.ops import KernelPath, ms_deform_attn, ms_deform_attn_reference
from mask2former.ops._extension import select_path

# float32 results must be within 1e-5 of the float64 reference, relative to the tensor's
# largest magnitude (location gradients scale with the level size, so an absolute 1e-5 would
# demand more digits than float32 holds)
FLOAT32_TOL = 1e-5


def _random_levels(rng: random.Random, n_levels: int) -> list[tuple[int, int]]:
    """Non-square levels of 1 to 11 pixels a side."""
    return [(rng.randint(1, 11), rng.randint(1, 11)) for _ in range(n_levels)]


def _grads(fn, inputs: tuple[torch.Tensor, ...], grad_output: torch.Tensor):
    value, shapes, starts, loc, attn = (
        t.detach().requires_grad_(t.is_floating_point()) for t in inputs
    )
    output = fn(value, shapes, starts, loc, attn)
    grads = torch.autograd.grad(output, (value, loc, attn), grad_output)
    return output.detach(), grads


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    scale = expected.abs().max().clamp_min(1.0)
    error = (actual.double() - expected.double()).abs().max() / scale
    assert error <= rel, f"{what}: max error {error:.3g} of max |ref| exceeds {rel:g}"


def test_cpu_kernel_is_dispatched(cpu_kernel):
    assert select_path(torch.device("cpu"), force_reference=False) is KernelPath.CPU


CASES = list(itertools.product([1, 2, 3, 4], [1, 3], [16, 32, 64]))


@pytest.mark.parametrize("n_levels, batch, channels", CASES)
def test_cpu_kernel_matches_reference_float32(cpu_kernel, make_inputs, n_levels, batch, channels):
    rng = random.Random(n_levels * 100 + batch * 10 + channels)
    levels = _random_levels(rng, n_levels)
    inputs = make_inputs(batch, levels, 2, channels, 13, 3, dtype=torch.float64, seed=channels)
    grad_output = torch.randn(batch, 13, 2 * channels, dtype=torch.float64)
    expected, expected_grads = _grads(ms_deform_attn_reference, inputs, grad_output)
    inputs32 = tuple(t.float() if t.is_floating_point() else t for t in inputs)
    actual, actual_grads = _grads(ms_deform_attn, inputs32, grad_output.float())
    assert actual.dtype == torch.float32
    _assert_close(actual, expected, FLOAT32_TOL, f"output, levels {levels}")
    for name, a, e in zip(
        ("value", "sampling_locations", "attention_weights"), actual_grads, expected_grads
    ):
        assert a.dtype == torch.float32
        _assert_close(a, e, FLOAT32_TOL, f"grad of {name}, levels {levels}")


def test_cpu_kernel_float64_matches_reference_exactly(cpu_kernel, make_inputs):
    inputs = make_inputs(2, [(6, 9), (3, 5), (2, 2)], 3, 8, 17, 4, spread=0.5)
    grad_output = torch.randn(2, 17, 24, dtype=torch.float64)
    expected, expected_grads = _grads(ms_deform_attn_reference, inputs, grad_output)
    actual, actual_grads = _grads(ms_deform_attn, inputs, grad_output)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_cpu_kernel_gradcheck_float64(cpu_kernel, make_inputs):
    value, shapes, starts, loc, attn = make_inputs(2, [(5, 4), (3, 2)], 2, 4, 6, 2, spread=0.3)
    inputs = (value.requires_grad_(), shapes, starts, loc.requires_grad_(), attn.requires_grad_())
    assert torch.autograd.gradcheck(ms_deform_attn, inputs, eps=1e-6, atol=1e-5)


def test_points_outside_every_level_give_zero(cpu_kernel, make_inputs):
    value, shapes, starts, loc, attn = make_inputs(1, [(4, 4), (2, 3)], 2, 8, 5, 2)
    far = torch.full_like(loc, 1.9)  # beyond the last pixel's far edge on every level
    value.requires_grad_()
    output = ms_deform_attn(value, shapes, starts, far, attn)
    assert torch.count_nonzero(output) == 0
    output.sum().backward()
    assert torch.count_nonzero(value.grad) == 0


def test_cpu_autocast_keeps_input_dtype(cpu_kernel, make_inputs):
    value, shapes, starts, loc, attn = make_inputs(
        2, [(5, 6), (3, 3)], 2, 8, 7, 2, dtype=torch.float32
    )
    expected = ms_deform_attn(value, shapes, starts, loc, attn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = ms_deform_attn(value, shapes, starts, loc, attn)
        low = ms_deform_attn(value.bfloat16(), shapes, starts, loc, attn.bfloat16())
    assert same.dtype == torch.float32
    torch.testing.assert_close(same, expected)
    assert low.dtype == torch.bfloat16
    # computed in float32 from bfloat16-rounded value/weights, then rounded once
    exact = ms_deform_attn(value.bfloat16().float(), shapes, starts, loc, attn.bfloat16().float())
    torch.testing.assert_close(low.float(), exact, rtol=2**-8, atol=1e-6)


def test_bfloat16_inputs_get_bfloat16_gradients(cpu_kernel, make_inputs):
    value, shapes, starts, loc, attn = (
        t.bfloat16().requires_grad_() if t.is_floating_point() else t
        for t in make_inputs(1, [(4, 5)], 2, 8, 3, 2)
    )
    ms_deform_attn(value, shapes, starts, loc, attn).float().sum().backward()
    assert value.grad.dtype == loc.grad.dtype == attn.grad.dtype == torch.bfloat16


def test_torch_compile_fullgraph_has_no_graph_break(cpu_kernel, make_inputs):
    inputs = make_inputs(2, [(6, 5), (3, 3)], 2, 8, 9, 2, dtype=torch.float32)
    weight = torch.randn(16)

    def fn(value, shapes, starts, loc, attn):
        return (ms_deform_attn(value, shapes, starts, loc, attn * 2) * weight).sum()

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    eager_out, eager_grads = _grads(lambda *a: fn(*a).reshape(1, 1, 1), inputs, torch.ones(1, 1, 1))
    out, grads = _grads(lambda *a: compiled(*a).reshape(1, 1, 1), inputs, torch.ones(1, 1, 1))
    torch.testing.assert_close(out, eager_out)
    for a, e in zip(grads, eager_grads):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch, heads", [(1, 1), (1, 3), (3, 2), (2, 8)])
def test_cpu_backward_work_split(cpu_kernel, make_inputs, threads, batch, heads):
    """Every way backward splits the work (by batch, head groups, or queries with private
    grad_value copies, depending on the thread count) gives the reference's gradients."""
    inputs = make_inputs(batch, [(5, 7), (3, 2)], heads, 8, 11, 2, seed=threads)
    grad_output = torch.randn(batch, 11, heads * 8, dtype=torch.float64)
    _, expected = _grads(ms_deform_attn_reference, inputs, grad_output)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, actual = _grads(ms_deform_attn, inputs, grad_output)
    finally:
        torch.set_num_threads(previous)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
