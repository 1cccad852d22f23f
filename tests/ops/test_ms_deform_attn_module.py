"""MSDeformAttn against the independent implementation in transformers (same parameter names,
published initialisation), and its padding-mask and reference-point contracts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mask2former.ops import MSDeformAttn

hf_mask2former = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")

LEVELS = [(6, 7), (3, 4), (2, 2)]
SHAPES = torch.tensor(LEVELS)
STARTS = torch.tensor([0, 42, 54])
S = 58


def _hf_module(ours: MSDeformAttn):
    hf = hf_mask2former.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(
        embed_dim=ours.d_model,
        num_heads=ours.n_heads,
        n_levels=ours.n_levels,
        n_points=ours.n_points,
    )
    hf.load_state_dict(ours.state_dict())  # strict: the parameter names must match
    return hf


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("coords", [2, 4])
def test_forward_matches_transformers(coords):
    torch.manual_seed(0)
    ours = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    _randomise(ours)
    hf = _hf_module(ours)
    query = torch.randn(2, 9, 32)
    memory = torch.randn(2, S, 32)
    reference = torch.rand(2, 9, 3, coords)
    padding = torch.rand(2, S) < 0.2
    expected, _ = hf(
        query,
        attention_mask=padding,
        encoder_hidden_states=memory,
        reference_points=reference,
        spatial_shapes_list=LEVELS,
        level_start_index=STARTS,
    )
    actual = ours(query, reference, memory, SHAPES, STARTS, padding)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_initialisation_matches_published():
    torch.manual_seed(0)
    ours = MSDeformAttn(d_model=64, n_levels=3, n_heads=8, n_points=4)
    hf = _hf_module(ours)
    fake_model = SimpleNamespace(config=SimpleNamespace(init_xavier_std=1.0, init_std=0.02))
    hf_mask2former.Mask2FormerPreTrainedModel._init_weights(fake_model, hf)
    theirs = hf.state_dict()
    for name in (
        "sampling_offsets.weight",
        "sampling_offsets.bias",
        "attention_weights.weight",
        "attention_weights.bias",
        "value_proj.bias",
        "output_proj.bias",
    ):
        torch.testing.assert_close(ours.state_dict()[name], theirs[name], msg=name)
    # head 1 of 8 points at 45 degrees: point k sits at (k+1, k+1) pixels
    bias = ours.sampling_offsets.bias.view(8, 3, 4, 2)
    torch.testing.assert_close(bias[1, 2, 3], torch.tensor([4.0, 4.0]))
    for name in ("value_proj", "output_proj"):  # xavier-uniform: nonzero, within the bound
        weight = getattr(ours, name).weight
        assert 0 < weight.abs().max() <= math.sqrt(6 / (64 + 64))


def test_padded_positions_do_not_influence_output():
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    query, memory, reference = torch.randn(1, 5, 32), torch.randn(1, S, 32), torch.rand(1, 5, 3, 2)
    padding = torch.zeros(1, S, dtype=torch.bool)
    padding[:, 30:42] = True
    padding[:, 54:] = True
    changed = memory.clone()
    changed[padding] = torch.randn(int(padding.sum()), 32) * 100
    first = module(query, reference, memory, SHAPES, STARTS, padding)
    second = module(query, reference, changed, SHAPES, STARTS, padding)
    torch.testing.assert_close(first, second)
    unmasked = module(query, reference, changed, SHAPES, STARTS, None)
    assert not torch.allclose(first, unmasked)


def test_bad_constructor_and_reference_points():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=30, n_heads=8)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    with pytest.raises(ValueError, match="end in 2 or 4"):
        module(torch.randn(1, 5, 32), torch.rand(1, 5, 3, 3), torch.randn(1, S, 32), SHAPES, STARTS)
