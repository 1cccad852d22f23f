"""Shared test set-up: where the reference data lives."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``; fails (never skips) when it is missing."""
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference data not found: looked for {REFERENCE_DIR}")
    return REFERENCE_DIR
