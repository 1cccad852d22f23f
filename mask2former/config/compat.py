"""The official repositories' ``add_*_config`` functions, for code written against them.

Official Mask2Former / MaskFormer build their config as ``get_cfg()`` followed by
``add_deeplab_config(cfg)`` and ``add_maskformer2_config(cfg)`` (``add_mask_former_config``),
which add the keys their models read. Our :func:`get_cfg` already holds every key, so these
functions only fill in keys that a config lacks (a config made elsewhere, or one from which
a group was deleted) with our defaults, and never change a value that is already set: a
value a user set before the call survives it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from .config import CfgNode, ConfigError, get_cfg

__all__ = [
    "VIDEO_KEYS",
    "add_mask_former_config",
    "add_maskformer2_config",
    "add_maskformer2_video_config",
    "add_missing_keys",
]

#: The keys of official Mask2Former's ``add_maskformer2_video_config``
#: (``mask2former_video/config.py``).
VIDEO_KEYS = (
    "INPUT.SAMPLING_FRAME_NUM",
    "INPUT.SAMPLING_FRAME_RANGE",
    "INPUT.SAMPLING_FRAME_SHUFFLE",
    "INPUT.AUGMENTATIONS",
)


def _leaf_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys.extend(_leaf_keys(value, full + ".") if isinstance(value, CfgNode) else [full])
    return keys


def _lookup(node: CfgNode, full_key: str):
    for name in full_key.split("."):
        node = node[name]
    return node


def _set_missing(cfg: CfgNode, full_key: str, value) -> bool:
    """Set ``full_key`` (creating groups on the way) unless present; True if it was set."""
    *parents, leaf = full_key.split(".")
    node = cfg
    for name in parents:
        if name not in node:
            node[name] = CfgNode()
        elif not isinstance(node[name], CfgNode):
            raise ConfigError(f"config key {full_key}: {name} is a value, not a group")
        node = node[name]
    if leaf in node:
        return False
    node[leaf] = copy.deepcopy(value)
    return True


def add_missing_keys(
    cfg: CfgNode, defaults: CfgNode, keys: Iterable[str] | None = None
) -> list[str]:
    """Copy into ``cfg`` every key of ``defaults`` (or only ``keys``, dotted full names) that
    ``cfg`` lacks; keys already in ``cfg`` keep their values. Returns the keys added.

    Raises :class:`ConfigError` when something is missing and ``cfg`` is frozen.
    """
    wanted = _leaf_keys(defaults) if keys is None else list(keys)
    missing = [k for k in wanted if not _has_key(cfg, k)]
    if missing and cfg.is_frozen():
        raise ConfigError(f"cannot add config keys to a frozen config: {missing[:5]}")
    return [k for k in missing if _set_missing(cfg, k, _lookup(defaults, k))]


def _has_key(cfg: CfgNode, full_key: str) -> bool:
    node = cfg
    for name in full_key.split("."):
        if not isinstance(node, CfgNode) or name not in node:
            return False
        node = node[name]
    return True


def add_maskformer2_config(cfg: CfgNode) -> None:
    """Official Mask2Former's ``add_maskformer2_config``: make sure ``cfg`` has every key
    our models, data and solver read (``MODEL.MASK_FORMER``, ``MODEL.SWIN``, ``INPUT``,
    ``SOLVER`` ...), with our defaults for the missing ones. Existing values are kept."""
    add_missing_keys(cfg, get_cfg())


add_mask_former_config = add_maskformer2_config
"""Official MaskFormer's name of :func:`add_maskformer2_config` (same keys)."""


def add_maskformer2_video_config(cfg: CfgNode) -> None:
    """Official Mask2Former's ``add_maskformer2_video_config``: make sure ``cfg`` has the video
    keys (:data:`VIDEO_KEYS`), with our defaults (the official ones) for the missing ones.
    Existing values are kept (the official function resets them).

    :func:`get_cfg` already holds these keys, so ``get_cfg()`` alone loads the published
    YouTube-VIS configs; this function is for configs made elsewhere and for code written
    against ``mask2former_video``. It does not select the video mapper: a video dataset
    does (see :func:`mask2former.data.build_dataset_mapper`)."""
    add_missing_keys(cfg, get_cfg(), VIDEO_KEYS)
