"""``verify_results``: check evaluation results against ``TEST.EXPECTED_RESULTS``."""

from __future__ import annotations

import math
from collections.abc import Mapping

from mask2former.config import CfgNode
from mask2former.utils import comm

__all__ = ["verify_results"]


def verify_results(cfg: CfgNode, results: Mapping) -> bool:
    """Check ``TEST.EXPECTED_RESULTS`` ``[[task, metric, value, tolerance], ...]`` against
    ``results`` (``{task: {metric: value}}``, e.g. ``"sem_seg_TTA"`` for TTA results).

    Returns True; raises ``AssertionError`` listing every metric that is missing, not finite
    or off by more than its tolerance. Other processes than the main one return True
    (only the main process has results).
    """
    if not comm.is_main_process():
        return True
    failures = []
    for entry in cfg.TEST.EXPECTED_RESULTS:
        if len(entry) != 4:
            raise ValueError(
                f"TEST.EXPECTED_RESULTS entries are [task, metric, value, tolerance], got {entry!r}"
            )
        task, metric, expected, tolerance = entry
        actual = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(actual) or abs(actual - expected) > tolerance:
            failures.append(f"{task}/{metric}: expected {expected} +- {tolerance}, got {actual}")
    if failures:
        raise AssertionError("TEST.EXPECTED_RESULTS not met: " + "; ".join(failures))
    return True
