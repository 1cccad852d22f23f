"""Fixtures for the deformable-attention tests: random inputs and kernel availability; the
deterministic-mode context shared by the determinism tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch

from mask2former.ops import cpu_kernel_available, cuda_kernel_available, extension_import_error


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """torch.use_deterministic_algorithms(enabled) inside, the previous setting after."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _extension_required() -> bool:
    """CI (FORCE_CUDA=1) or MASK2FORMER_REQUIRE_EXT=1: a missing kernel fails instead of skips."""
    return os.environ.get("FORCE_CUDA") == "1" or os.environ.get("MASK2FORMER_REQUIRE_EXT") == "1"


def _missing(what: str) -> None:
    message = f"{what} not built ({extension_import_error() or 'compiled without it'})"
    if _extension_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def cpu_kernel() -> None:
    """Skips (fails where the extension is required) unless the C++ CPU kernel is built."""
    if not cpu_kernel_available():
        _missing("mask2former._C CPU kernel")


@pytest.fixture
def cuda_kernel() -> None:
    """Skips without a GPU; with one, skips (or fails, see above) unless the kernel is built."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if not cuda_kernel_available():
        _missing("mask2former._C CUDA kernel")


def _make_inputs(
    batch: int,
    level_shapes: list[tuple[int, int]],
    heads: int,
    channels: int,
    queries: int,
    points: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    spread: float = 0.2,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights).

    Locations are uniform in [-spread, 1 + spread], so some fall outside the levels.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(level_shapes, dtype=torch.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    n_levels = len(level_shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen, dtype=dtype)
    loc_shape = (batch, queries, heads, n_levels, points, 2)
    loc = torch.rand(loc_shape, generator=gen, dtype=dtype) * (1 + 2 * spread) - spread
    attn = torch.rand(loc_shape[:-1], generator=gen, dtype=dtype)
    return tuple(t.to(device) for t in (value, shapes, starts, loc, attn))


@pytest.fixture
def make_inputs():
    """The input factory ``_make_inputs`` (see its docstring)."""
    return _make_inputs
