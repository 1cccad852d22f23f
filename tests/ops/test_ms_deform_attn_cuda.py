"""The CUDA kernel against the float64 pure-PyTorch reference. Skipped without a GPU; run
wherever one exists.

Tolerances are on the largest error relative to the largest reference magnitude. Inputs are
rounded to the tested dtype first and the reference runs in float64 on those rounded inputs, so
the error measured is the kernel's own: output rounding plus float32 accumulation.
"""

from __future__ import annotations

import pytest
import torch

from mask2former.ops import ms_deform_attn, ms_deform_attn_reference

pytestmark = pytest.mark.cuda

# dtype: (output tolerance, gradient tolerance)
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 4e-3),  # 2^-11 output rounding; grad_output rounded to half too
    torch.bfloat16: (1.6e-2, 3e-2),  # 2^-8 output rounding; grad_output rounded to bfloat16
}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double().cpu()
    scale = expected.abs().max().clamp_min(1e-12)
    return float((actual.double().cpu() - expected).abs().max() / scale)


def _forward_backward(fn, inputs, grad_output):
    value, shapes, starts, loc, attn = (
        t.detach().requires_grad_(t.is_floating_point()) for t in inputs
    )
    output = fn(value, shapes, starts, loc, attn)
    grads = torch.autograd.grad(output, (value, loc, attn), grad_output.to(output.dtype))
    return output, grads


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("channels", [16, 32, 64])
def test_cuda_kernel_matches_float64_reference(cuda_kernel, make_inputs, dtype, channels):
    levels = [(13, 17), (7, 9), (4, 5), (1, 3)]
    inputs = make_inputs(3, levels, 4, channels, 50, 4, dtype=torch.float64, seed=channels)
    # round what the kernel sees; locations stay float32 for every dtype
    rounded = [t.to(dtype).double() if t.is_floating_point() else t for t in inputs]
    rounded[3] = inputs[3].float().double()
    grad_output = torch.randn(3, 50, 4 * channels, dtype=torch.float64).to(dtype).double()
    expected, expected_grads = _forward_backward(ms_deform_attn_reference, rounded, grad_output)
    on_gpu = [t.cuda() for t in rounded]
    on_gpu[0], on_gpu[4] = on_gpu[0].to(dtype), on_gpu[4].to(dtype)
    on_gpu[3] = on_gpu[3].float()
    actual, actual_grads = _forward_backward(ms_deform_attn, on_gpu, grad_output.cuda())
    out_tol, grad_tol = TOLERANCES[dtype]
    assert actual.dtype == dtype
    assert _relative_error(actual, expected) <= out_tol
    for name, a, e in zip(("value", "locations", "weights"), actual_grads, expected_grads):
        error = _relative_error(a, e)
        assert error <= grad_tol, f"grad of {name}: {error:.3g} > {grad_tol:g}"


def test_cuda_kernel_gradcheck_float64(cuda_kernel, make_inputs):
    value, shapes, starts, loc, attn = make_inputs(
        2, [(5, 4), (3, 2)], 2, 4, 6, 2, spread=0.3, device="cuda"
    )
    inputs = (value.requires_grad_(), shapes, starts, loc.requires_grad_(), attn.requires_grad_())
    assert torch.autograd.gradcheck(ms_deform_attn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_autocast_runs_in_autocast_dtype(cuda_kernel, make_inputs, dtype):
    value, shapes, starts, loc, attn = make_inputs(
        2, [(8, 6), (4, 3)], 2, 32, 20, 4, dtype=torch.float32, device="cuda"
    )
    with torch.autocast("cuda", dtype=dtype):
        output = ms_deform_attn(value, shapes, starts, loc, attn)
    assert output.dtype == dtype
    expected = ms_deform_attn_reference(value.double(), shapes, starts, loc.double(), attn.double())
    assert _relative_error(output, expected) <= 2 * TOLERANCES[dtype][0]


def test_cuda_errors_are_raised(cuda_kernel, make_inputs):
    value, shapes, starts, loc, attn = make_inputs(1, [(4, 4)], 2, 8, 3, 2, device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        ms_deform_attn(value, shapes, starts, loc.cpu(), attn)
