"""The compiled evaluation codec ``mask2former._codec`` (ops/codec/codec.c), when built.

It holds the byte loops of COCO RLE encoding and PNG row unfiltering. Every caller keeps a
path through pycocotools / pyspng / OpenCV with the same results and chooses with an
explicit ``if codec() is None``; importing never fails because the codec is missing, and its
absence is logged once.
"""

from __future__ import annotations

import logging
from types import ModuleType

logger = logging.getLogger(__name__)

_CODEC: ModuleType | None
try:
    from mask2former import _codec as _CODEC
except ImportError as exc:  # not built (no C compiler at install, MASK2FORMER_BUILD_EXT=0)
    _CODEC = None
    _WHY = f"{type(exc).__name__}: {exc}"
else:
    _WHY = ""
_LOGGED = False


def codec() -> ModuleType | None:
    """``mask2former._codec``, or None when it cannot be imported (logged once)."""
    global _LOGGED
    if _CODEC is None and not _LOGGED:
        _LOGGED = True
        logger.warning(
            "mask2former._codec is not available (%s): RLE and PNG coding use pycocotools, "
            "pyspng and OpenCV (same results, slower); reinstall with a C compiler to build it",
            _WHY,
        )
    return _CODEC
