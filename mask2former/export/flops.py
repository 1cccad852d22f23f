"""FLOP, activation and parameter counts of a model with fvcore, deformable attention included."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, parameter_count_table
from fvcore.nn.jit_handles import get_shape
from torch import nn

from .logits import LogitsModel

# Multiply-adds per output channel of one sampling point: 4 bilinear taps + 1 attention weight.
_MACS_PER_SAMPLE = 5
MS_DEFORM_ATTN_OP = "mask2former::ms_deform_attn"


def ms_deform_attn_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: value (N, S, M, D), sampling_locations (N, Lq, M, L, P, 2).

    Counts ``N * Lq * M * L * P * D * 5`` multiply-adds (fvcore's "flop" is one multiply-add):
    each sampled point reads four neighbours (bilinear) and is weighted once.
    """
    n, _, heads, channels = get_shape(inputs[0])
    _, queries, _, levels, points, _ = get_shape(inputs[3])
    return n * queries * heads * levels * points * channels * _MACS_PER_SAMPLE


def _handles() -> dict:
    return {MS_DEFORM_ATTN_OP: ms_deform_attn_flop_jit}


def _as_analysable(model: nn.Module) -> nn.Module:
    return model if not hasattr(model, "sem_seg_head") else LogitsModel(model)


def flop_count(model: nn.Module, images: torch.Tensor) -> FlopCountAnalysis:
    """fvcore FlopCountAnalysis of the model's logits graph on ``images`` (N, 3, H, W)."""
    analysis = FlopCountAnalysis(_as_analysable(model).eval(), (images,))
    return analysis.set_op_handle(**_handles()).unsupported_ops_warnings(False)


def activation_count(model: nn.Module, images: torch.Tensor) -> ActivationCountAnalysis:
    """fvcore ActivationCountAnalysis of the model's logits graph on ``images``."""
    return ActivationCountAnalysis(
        _as_analysable(model).eval(), (images,)
    ).unsupported_ops_warnings(False)


def parameter_table(model: nn.Module, max_depth: int = 3) -> str:
    """fvcore's parameter count table, to ``max_depth`` levels of module names."""
    return parameter_count_table(model, max_depth=max_depth)
