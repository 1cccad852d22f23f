"""State dicts of ``transformers``' Mask2Former / MaskFormer <-> ours, by the rules of
:mod:`.keys`."""

from __future__ import annotations

import torch

from mask2former.modeling.backbone.swin import relative_position_index

from . import keys
from .errors import ConversionError

__all__ = ["hf_to_ours_state_dict", "ours_to_hf_state_dict"]


def hf_to_ours_state_dict(
    hf_state: dict[str, torch.Tensor], model_type: str, backbone_type: str
) -> dict[str, torch.Tensor]:
    """Rename (and fuse) a ``transformers`` state dict into ours; raises on an unknown key."""
    rules = keys.rules(keys.TO_OURS, model_type, backbone_type)
    ours: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in hf_state.items():
        match, target = keys.rename(key, rules, "hf")
        if target is None:
            continue
        if match.groupdict().get("part") is None:
            ours[target] = value
        else:
            parts.setdefault(target, {})[keys.PART_INDEX[match["part"]]] = value
    for target, pieces in parts.items():
        if sorted(pieces) != [0, 1, 2]:
            raise ConversionError(f"{target}: expected 3 projections, found parts {sorted(pieces)}")
        ours[target] = torch.cat([pieces[i] for i in range(3)], dim=0)
    _add_relative_position_index(ours)
    return ours


def ours_to_hf_state_dict(
    state: dict[str, torch.Tensor], model_type: str, backbone_type: str
) -> dict[str, torch.Tensor]:
    """Rename (and split) our state dict into ``transformers``'; raises on an unknown key."""
    rules = keys.rules(keys.TO_HF, model_type, backbone_type)
    hf: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        _, target = keys.rename(key, rules, "ours")
        if isinstance(target, str):
            hf[target] = value
        elif target is not None:  # query, key, value: equal slices along dim 0
            for name, piece in zip(target, value.chunk(len(target), dim=0)):
                hf[name] = piece.clone()
    return hf


def _add_relative_position_index(state: dict[str, torch.Tensor]) -> None:
    """Add each Swin block's ``relative_position_index`` buffer where transformers has none."""
    for key in [k for k in state if k.endswith("attn.relative_position_bias_table")]:
        index_key = key.replace("relative_position_bias_table", "relative_position_index")
        if index_key not in state:
            window = (round(len(state[key]) ** 0.5) + 1) // 2
            state[index_key] = relative_position_index(window)
