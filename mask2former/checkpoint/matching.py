"""Load a state dict into a model by exact key names, and report what did not match."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import NamedTuple

import torch
from tabulate import tabulate
from torch import nn

from .io import CheckpointError

__all__ = ["IncompatibleKeys", "add_backbone_prefix_if_backbone_only", "load_state_dict_exact"]

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
# BatchNorm step counters carry no weights; FrozenBatchNorm2d has none.
_STEP_COUNTER = "num_batches_tracked"


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
    incorrect_shapes: list[tuple[str, tuple, tuple]]  # always empty: a mismatch raises


def add_backbone_prefix_if_backbone_only(
    state_dict: Mapping[str, torch.Tensor], model_keys: set[str]
) -> dict[str, torch.Tensor]:
    """Rename a backbone-only checkpoint's keys to ``backbone.<key>``.

    The rule (exact matching with one fixed prefix, not fuzzy matching): the prefix
    ``backbone.`` is added to every key if and only if

    1. no key of ``state_dict`` is a key of the model, and
    2. at least one key of ``state_dict``, with the prefix, is a key of the model.

    Then, as always, a weight is loaded only where its (prefixed) name equals a model key;
    the others are reported as unexpected. Condition 2 does not ask that *every* key fit:
    detectron2's own ImageNet files (``detectron2://ImageNetPretrained/torchvision/R-50.pkl``)
    carry the classifier as ``stem.fc.weight`` / ``stem.fc.bias``, which no backbone has.
    Backbone-only files are what the converters in :mod:`mask2former.checkpoint.convert`
    produce (``stem.conv1.weight``, ``res2.0.conv1.weight``, ``patch_embed.proj.weight`` ...).
    Otherwise ``state_dict`` is returned unchanged.
    """
    if any(k in model_keys for k in state_dict):
        return dict(state_dict)
    if not any(BACKBONE_PREFIX + k in model_keys for k in state_dict):
        return dict(state_dict)
    logger.info("Checkpoint holds only backbone weights: loading them into model.backbone")
    return {BACKBONE_PREFIX + k: v for k, v in state_dict.items()}


def _group_keys(keys: list[str]) -> list[str]:
    """``a.b.weight``, ``a.b.bias`` -> ``a.b.{bias, weight}``: one line per module."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        prefix, _, leaf = key.rpartition(".")
        groups[prefix].append(leaf)
    lines = []
    for prefix, leaves in groups.items():
        leaf_text = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        lines.append(f"{prefix}.{leaf_text}" if prefix else leaf_text)
    return lines


def format_incompatible_keys(missing: list[str], unexpected: list[str]) -> str:
    """A two-column table: model keys not in the checkpoint, checkpoint keys not in the model."""
    rows = [("missing (in model, not in checkpoint)", line) for line in _group_keys(missing)]
    rows += [("unexpected (in checkpoint, not in model)", line) for line in _group_keys(unexpected)]
    return tabulate(rows, headers=["kind", "keys"], tablefmt="pipe")


def _check_shapes(state_dict: Mapping[str, torch.Tensor], model_state: Mapping, source: str):
    for key, value in state_dict.items():
        if key in model_state and tuple(value.shape) != tuple(model_state[key].shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key}: checkpoint has "
                f"{tuple(value.shape)}, model has {tuple(model_state[key].shape)}"
            )


def load_state_dict_exact(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> IncompatibleKeys:
    """Copy ``state_dict`` into ``model`` where the key names agree exactly.

    A backbone-only checkpoint is first renamed by
    :func:`add_backbone_prefix_if_backbone_only`. A key present in both with different
    shapes raises :class:`CheckpointError` naming the key and both shapes. Missing and
    unexpected keys are logged as a table and returned.
    """
    model_state = model.state_dict()
    state_dict = add_backbone_prefix_if_backbone_only(state_dict, set(model_state))
    _check_shapes(state_dict, model_state, source)
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_STEP_COUNTER)]
    unexpected = list(result.unexpected_keys)
    loaded = len(set(state_dict) & set(model_state))
    logger.info("Loaded %d of %d model entries from %s", loaded, len(model_state), source)
    if missing or unexpected:
        logger.warning(
            "Keys of %s that did not match the model:\n%s",
            source,
            format_incompatible_keys(missing, unexpected),
        )
    if loaded == 0 and len(state_dict) > 0:
        logger.warning("%s: no key matched the model; nothing was loaded", source)
    return IncompatibleKeys(missing, unexpected, [])
