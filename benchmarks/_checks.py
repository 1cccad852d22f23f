"""The verdict line the checking benchmarks end with (``.ci/gpu-check`` reads their exit code)."""

from __future__ import annotations


def verdict(failures: list[str], what: str) -> int:
    """Print each failure and ``what: passed`` / ``FAILED``; the exit code (1 on a failure)."""
    for failure in failures:
        print("FAILED:", failure)
    print(f"{what}:", "FAILED" if failures else "passed")
    return 1 if failures else 0
