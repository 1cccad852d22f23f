"""Converters from the ImageNet releases the configs name to our backbone key names.

Both return backbone-only state dicts (keys without ``backbone.``), which
:func:`mask2former.checkpoint.load_state_dict_exact` loads into ``model.backbone``.
They are plain dicts: the module versions of the source (``_metadata``, e.g. torchvision's
BatchNorm2d version 2) describe the source's modules, not ours, so they are not carried over,
and our modules load the result as a checkpoint without versions (as detectron2 does with
its ``matching_heuristics``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

import torch

from .io import read_checkpoint, save_weights

__all__ = ["convert_swin_release", "convert_torchvision_resnet", "convert_weights_file"]

logger = logging.getLogger(__name__)

# torchvision ResNet name pieces -> detectron2 ResNet name pieces, applied in order
_TORCHVISION_RULES = (
    (re.compile(r"^conv1\."), "stem.conv1."),
    (re.compile(r"^bn1\."), "stem.conv1.norm."),
    (re.compile(r"^layer(\d)\."), lambda m: f"res{int(m.group(1)) + 1}."),
    (re.compile(r"\.bn(\d)\."), r".conv\1.norm."),
    (re.compile(r"\.downsample\.0\."), ".shortcut."),
    (re.compile(r"\.downsample\.1\."), ".shortcut.norm."),
)


def torchvision_resnet_key(key: str) -> str:
    """``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight`` and so on."""
    for pattern, replacement in _TORCHVISION_RULES:
        key = pattern.sub(replacement, key)
    return key


def convert_torchvision_resnet(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict -> detectron2 ResNet names (fc and step counters dropped).

    Use the result with ``MODEL.RESNETS.STRIDE_IN_1X1 False`` (torchvision strides the 3x3)
    and RGB input normalised by the ImageNet mean and std.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        new_key = torchvision_resnet_key(key)
        if not new_key.startswith(("stem.", "res")):
            raise KeyError(f"not a torchvision ResNet key: {key!r}")
        converted[new_key] = value
    logger.info("Converted %d torchvision ResNet weights", len(converted))
    return converted


# Entries of the Swin classification release with no counterpart in the backbone: the
# classifier, the final norm, and the shifted-window masks (recomputed for each input size).
_SWIN_DROPPED = re.compile(r"^(head\.|norm\.)|\.attn_mask$")


def convert_swin_release(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Swin release's ``checkpoint["model"]`` -> D2SwinTransformer names.

    The release already uses the backbone's names (``patch_embed.*``, ``layers.*``); the
    classification head, final ``norm`` and ``attn_mask`` buffers are dropped. The
    per-stage ``norm{i}`` of the backbone are not in the release and stay initialised.
    """
    converted = {k: v for k, v in state_dict.items() if not _SWIN_DROPPED.search(k)}
    unknown = [
        k for k in converted if not k.startswith(("patch_embed.", "layers.", "absolute_pos"))
    ]
    if unknown:
        raise KeyError(f"not Swin release keys: {unknown[:5]}")
    dropped = len(state_dict) - len(converted)
    logger.info(
        "Converted %d Swin weights (dropped %d head/norm/mask entries)", len(converted), dropped
    )
    return converted


def convert_weights_file(
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    source: str,
    output: str,
    author: str,
) -> None:
    """Read the weights file ``source``, convert its state dict with ``convert`` (one of the
    converters above) and save the result to ``output`` in the format its extension names.

    A ``.pkl`` also gets detectron2's ``__author__`` (``author``) and ``matching_heuristics``
    entries, as detectron2's converters write them. The tools/convert-*-to-d2.py scripts.
    """
    weights = convert(read_checkpoint(source)["model"])
    extra = {"__author__": author, "matching_heuristics": True}
    save_weights(weights, output, extra=extra if output.endswith(".pkl") else None)
