"""Config keys that nothing reads, and the one value each accepts.

Every key of ``get_cfg()`` is either read by the code or listed here. A key is listed when the
official code defines it but never reads it (e.g. the deformable pixel decoder's
``DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS``), or when it turns on a feature we do not implement
(deformable convolutions in the ResNet). Such a key keeps the value the code implements; any
other value is refused by :func:`check_supported` with a :class:`ConfigError` naming the key,
instead of being silently ignored.

:func:`check_supported` is called once when a model is built (``build_model``) and when a
trainer is built (``DefaultTrainer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fvcore.common.config import CfgNode as _FvCfgNode

from .config import ConfigError

__all__ = ["NOT_READ", "NotRead", "check_supported"]


@dataclass(frozen=True)
class NotRead:
    """A config key nothing reads: the only value it may hold, and why."""

    key: str
    value: Any
    reason: str


#: The keys of ``get_cfg()`` that nothing reads. Each must keep ``value``.
NOT_READ: tuple[NotRead, ...] = (
    NotRead(
        "VERSION",
        2,
        "detectron2 upgrades configs of older format versions; this code reads version 2 only",
    ),
    NotRead(
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
        [False, False, False, False],
        "deformable convolutions in the ResNet are not implemented",
    ),
    NotRead(
        "MODEL.RESNETS.DEFORM_MODULATED",
        False,
        "deformable convolutions in the ResNet are not implemented",
    ),
    NotRead(
        "MODEL.RESNETS.DEFORM_NUM_GROUPS",
        1,
        "deformable convolutions in the ResNet are not implemented",
    ),
    NotRead(
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS",
        8,
        "the official MSDeformAttnPixelDecoder does not read it: its encoder has "
        "MODEL.MASK_FORMER.NHEADS attention heads",
    ),
    NotRead(
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS",
        4,
        "the official MSDeformAttnPixelDecoder does not read it: its encoder samples 4 points "
        "per head and level",
    ),
    NotRead(
        "SOLVER.NESTEROV",
        False,
        "the official Mask2Former/MaskFormer optimizer builds SGD without Nesterov momentum",
    ),
    NotRead("VIS_PERIOD", 0, "training visualisation is not implemented"),
    NotRead("GLOBAL.HACK", 1.0, "detectron2 defines it and nothing reads it"),
)


def _value(cfg: _FvCfgNode, key: str) -> Any:
    node: Any = cfg
    for name in key.split("."):
        node = dict.__getitem__(node, name)
    return node


def _same(a: Any, b: Any) -> bool:
    """Equal, lists and tuples by their items, and a bool only to a bool."""
    if isinstance(a, Sequence) and not isinstance(a, str):
        if not isinstance(b, Sequence) or isinstance(b, str) or len(a) != len(b):
            return False
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def check_supported(cfg: _FvCfgNode) -> None:
    """Raise :class:`ConfigError` if a key of :data:`NOT_READ` holds another value than its own.

    The values are looked up without going through the config's attribute access, so a
    config that records which keys are read does not count these as read.
    """
    for entry in NOT_READ:
        value = _value(cfg, entry.key)
        if not _same(value, entry.value):
            raise ConfigError(
                f"{entry.key} = {value!r} is not supported ({entry.reason}); "
                f"it must stay {entry.value!r}"
            )
