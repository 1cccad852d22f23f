"""FrozenBatchNorm2d: the fused inference path against the scale/bias formula and BatchNorm2d."""

from collections import OrderedDict

import torch
from torch import nn

from mask2former.layers import FrozenBatchNorm2d


def frozen_with_random_stats(channels: int, seed: int) -> FrozenBatchNorm2d:
    generator = torch.Generator().manual_seed(seed)
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.randn(channels, generator=generator))
    norm.bias.copy_(torch.randn(channels, generator=generator))
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.05)
    return norm


def test_fused_inference_path_matches_scale_and_bias_formula():
    """|fused - formula| <= 1e-6 x (|x * scale| + |bias|): relative to the two summed terms,
    the only scale that is meaningful where they cancel."""
    norm = frozen_with_random_stats(16, seed=0)
    x = torch.randn(2, 16, 9, 11, generator=torch.Generator().manual_seed(1)) * 5
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    bias = (norm.bias - norm.running_mean * scale).view(1, -1, 1, 1)
    scale = scale.view(1, -1, 1, 1)
    with torch.no_grad():
        fused = norm(x)
    # x.requires_grad takes the unfused formula (used in training)
    unfused = norm(x.clone().requires_grad_()).detach()
    for out in (fused, unfused):
        error = (out - (x * scale + bias)).abs()
        assert (error <= 1e-6 * ((x * scale).abs() + bias.abs())).all()


def test_matches_batchnorm2d_in_eval_mode_with_and_without_grad():
    """Independent reference: torch's BatchNorm2d in eval mode with the same statistics."""
    frozen = frozen_with_random_stats(8, seed=2)
    reference = nn.BatchNorm2d(8).eval()
    missing, unexpected = reference.load_state_dict(frozen.state_dict(), strict=False)
    assert set(missing) <= {"num_batches_tracked"} and not unexpected
    x = torch.randn(3, 8, 5, 7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(frozen(x), reference(x), rtol=1e-6, atol=1e-6)
    x_grad = x.clone().requires_grad_()
    out = frozen(x_grad)
    torch.testing.assert_close(out, reference(x), rtol=1e-6, atol=1e-5)
    out.sum().backward()
    expected_grad = (frozen.weight * (frozen.running_var + frozen.eps).rsqrt()).view(1, -1, 1, 1)
    torch.testing.assert_close(x_grad.grad, expected_grad.expand_as(x), rtol=1e-6, atol=0)
    assert all(b.grad is None for b in frozen.buffers())


def _state_with_version(norm: FrozenBatchNorm2d, version: int | None, keys: tuple[str, ...]):
    state = OrderedDict((k, v) for k, v in norm.state_dict().items() if k in keys)
    state._metadata = OrderedDict([("", {} if version is None else {"version": version})])
    return state


def test_version_1_without_statistics_loads_identity_statistics():
    """detectron2's rule: below version 2 (or none) running_mean 0 and running_var 1."""
    source, target = frozen_with_random_stats(4, seed=4), frozen_with_random_stats(4, seed=5)
    for version in (None, 1):
        result = target.load_state_dict(_state_with_version(source, version, ("weight", "bias")))
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert torch.equal(target.weight, source.weight)
        assert torch.equal(target.running_mean, torch.zeros(4))
        assert torch.equal(target.running_var, torch.ones(4))


def test_version_3_without_statistics_reports_them_missing():
    source, target = frozen_with_random_stats(4, seed=4), frozen_with_random_stats(4, seed=5)
    before = target.running_var.clone()
    state = _state_with_version(source, 3, ("weight", "bias"))
    result = target.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["running_mean", "running_var"]
    assert torch.equal(target.running_var, before)


def test_a_checkpoint_without_the_module_leaves_its_statistics():
    """No weight of this module in the checkpoint: nothing to complete, even without versions."""
    norm = frozen_with_random_stats(4, seed=6)
    before = norm.running_var.clone()
    result = norm.load_state_dict(_state_with_version(norm, None, ()), strict=False)
    assert sorted(result.missing_keys) == ["bias", "running_mean", "running_var", "weight"]
    assert torch.equal(norm.running_var, before)
