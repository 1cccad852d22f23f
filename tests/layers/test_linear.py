"""``linear``: oneDNN's float32 products, forward and backward, against ``F.linear``."""

import pytest
import torch
from torch.nn import functional as F

from mask2former.layers.linear import (
    MIN_ONEDNN_MACS,
    TALL_ROWS_PER_FEATURE,
    Linear,
    linear,
    onednn_linear_available,
    uses_onednn,
)

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN linear op")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("rows", [3, 64])  # 5 x 64 rows: a tall product (see linear.py)
def test_forward_and_gradients_match_f_linear(relu, rows):
    g = torch.Generator().manual_seed(0)
    # (5, rows, 16): a transposed, non-contiguous input with two leading dimensions
    x = torch.randn(rows, 5, 16, generator=g).transpose(0, 1).requires_grad_()
    weight = torch.randn(24, 16, generator=g).requires_grad_()
    bias = torch.randn(24, generator=g).requires_grad_()
    assert uses_onednn(x, weight, min_macs=0)
    # both ways of computing the weight's gradient
    assert (5 * rows >= TALL_ROWS_PER_FEATURE * 24) == (rows == 64)
    out = linear(x, weight, bias, relu=relu, min_macs=0)
    expected = F.linear(x, weight, bias)
    expected = F.relu(expected) if relu else expected
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, (x, weight, bias), grad_out)
    for got, want in zip(grads, torch.autograd.grad(expected, (x, weight, bias), grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_without_gradients_the_relu_runs_inside_the_product():
    x, weight = torch.randn(7, 8), torch.randn(4, 8)
    with torch.no_grad():
        out = linear(x, weight, None, relu=True, min_macs=0)
    torch.testing.assert_close(out, F.relu(x @ weight.t()))


def test_small_products_take_f_linear():
    # 64 x 64 x 64 multiply-adds, below the threshold; 64 x 64 x 1024 at it
    x, weight, wide = torch.randn(64, 64), torch.randn(64, 64), torch.randn(1024, 64)
    assert 64 * 64 * 64 < MIN_ONEDNN_MACS <= 64 * 64 * 1024
    assert not uses_onednn(x, weight) and uses_onednn(x, wide)
    x.requires_grad_()
    (grad,) = torch.autograd.grad(linear(x, weight).sum(), x)
    (want,) = torch.autograd.grad(F.linear(x, weight).sum(), x)
    assert torch.equal(linear(x, weight), F.linear(x, weight)) and torch.equal(grad, want)


def test_other_dtypes_autocast_and_tracing_take_f_linear():
    x, weight = torch.randn(2, 8), torch.randn(4, 8)
    assert uses_onednn(x, weight, min_macs=0)
    assert not uses_onednn(x.double(), weight.double(), min_macs=0)
    assert not uses_onednn(x[:0], weight, min_macs=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, weight, min_macs=0)
        assert linear(x, weight).dtype == torch.bfloat16
    layer = Linear(8, 4)
    traced = torch.jit.trace(layer, x)
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), F.linear(x, layer.weight, layer.bias))
