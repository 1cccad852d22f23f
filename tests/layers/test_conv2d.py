"""Conv2d: the frozen norm folded into the convolution, and 1x1 convolutions as linear maps
over channels, against the plain convolution followed by the norm."""

import pytest
import torch
from torch.nn import functional as F

from mask2former.layers import Conv2d
from mask2former.layers.linear import onednn_linear_available, uses_onednn
from tests.layers.test_frozen_batch_norm import frozen_with_random_stats


@pytest.mark.parametrize("kernel, stride, bias", [(1, 1, False), (1, 2, True), (3, 1, False)])
def test_conv_with_frozen_norm_is_the_convolution_then_the_norm(kernel, stride, bias):
    torch.manual_seed(0)
    norm = frozen_with_random_stats(8, seed=1)
    conv = Conv2d(4, 8, kernel, stride=stride, padding=kernel // 2, bias=bias, norm=norm)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)

    def reference(x):
        return norm(F.conv2d(x, conv.weight, conv.bias, stride, kernel // 2))

    with torch.no_grad():
        torch.testing.assert_close(conv(x), reference(x), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(conv(x).square().sum(), (x, conv.weight))
    expected = torch.autograd.grad(reference(x).square().sum(), (x, conv.weight))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN linear op")
def test_pointwise_conv_gives_a_channels_last_output():
    # 33 x 35 pixels x 64 x 64 channels: a product large enough for oneDNN
    conv = Conv2d(64, 64, 1, stride=2)
    x = torch.randn(1, 64, 66, 70)
    assert uses_onednn(x[:, :, ::2, ::2].permute(0, 2, 3, 1), conv.weight.flatten(1))
    with torch.no_grad():
        out = conv(x)
    assert out.shape == (1, 64, 33, 35)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, 2))


def test_in_place_relu_after_a_pointwise_conv_has_the_right_gradient():
    """ResNet's bottleneck applies ``F.relu_`` to its 1x1 convolutions' outputs."""
    torch.manual_seed(0)
    conv = Conv2d(64, 64, 1, norm=frozen_with_random_stats(64, seed=2))
    x = torch.randn(2, 64, 32, 40, requires_grad=True)
    grads = torch.autograd.grad(F.relu_(conv(x)).square().sum(), (x, conv.weight))
    reference = F.relu(conv.norm(F.conv2d(x, conv.weight, conv.bias)))
    expected = torch.autograd.grad(reference.square().sum(), (x, conv.weight))
    for got, want in zip(grads, expected):
        # float32 sums over 2560 pixels: rounding of ~1e-4 relative; a wrong gradient is off by O(1)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
