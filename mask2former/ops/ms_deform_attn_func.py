"""Multi-scale deformable attention: the functional op, its pure-PyTorch reference and dispatch.

Shapes (published Deformable-DETR convention)::

    value:              (N, S, M, D)         S = sum over levels of H_l * W_l; M heads of D channels
    spatial_shapes:     (L, 2) int64         (H_l, W_l) of each level
    level_start_index:  (L,) int64           offset of each level in S: [0, H_0*W_0, ...]
    sampling_locations: (N, Lq, M, L, P, 2)  (x, y) in [0, 1] of each level's image (may leave it)
    attention_weights:  (N, Lq, M, L, P)
    output:             (N, Lq, M * D)

Sampling is bilinear with zero padding, pixel centres at (i + 0.5) / size (grid_sample with
``align_corners=False``).

:func:`ms_deform_attn` is a torch custom op (``mask2former::ms_deform_attn``) with a fake
implementation and a registered autograd formula, so ``torch.compile`` keeps it in one graph.
Inside the op an explicit test of device and availability picks the CUDA kernel, the C++ CPU
kernel or the reference (:func:`mask2former.ops._extension.select_path`). Errors raised by a
kernel propagate; nothing falls back silently.

Precision: on CUDA the op computes in the dtype of ``value`` (float32, float16, bfloat16 or
float64) with float32 accumulation; under ``torch.autocast("cuda")`` ``value`` and
``attention_weights`` are first cast to the autocast dtype. On CPU the op computes in float32
(float64 for float64 input) and returns ``value``'s dtype. Sampling locations are always used in
float32 or better, since a bfloat16 coordinate is off by up to half a pixel on a 128-wide level.

Determinism: the forward is deterministic everywhere. The default CUDA backward sums the value
gradient with float atomics, so its last bits vary from run to run. Under
``torch.use_deterministic_algorithms(True)`` (read at each backward) every path gives the same
gradient bits on every run: the CUDA kernel sums each value gradient in a fixed order, the CPU
kernel never splits the queries between threads (so its bits do not depend on the number of
threads either), and the reference replaces grid_sample's CUDA backward, which torch refuses in
that mode, by gathers and ``index_add_`` (:mod:`mask2former.ops.bilinear`), in the op's backward
and, on CUDA, under autograd on the forced reference path.
"""

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _extension, bilinear
from ._extension import KernelPath
from .deterministic import backward_refused

__all__ = [
    "force_reference_path",
    "ms_deform_attn",
    "ms_deform_attn_reference",
]

_FORCE_REFERENCE_DEPTH = 0


@contextlib.contextmanager
def force_reference_path() -> Iterator[None]:
    """Within this context :func:`ms_deform_attn` calls :func:`ms_deform_attn_reference`
    directly (plain aten ops, no custom op), e.g. for ONNX export. The environment variable
    ``MASK2FORMER_FORCE_REFERENCE_OPS=1`` has the same effect everywhere."""
    global _FORCE_REFERENCE_DEPTH
    _FORCE_REFERENCE_DEPTH += 1
    try:
        yield
    finally:
        _FORCE_REFERENCE_DEPTH -= 1


def _reference_forced() -> bool:
    return _FORCE_REFERENCE_DEPTH > 0 or _extension.env_forces_reference()


def static_shapes(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Level sizes as Python ints, from an (L, 2) tensor or a sequence of (H_l, W_l)."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _flat_sizes(level_sizes: Sequence[tuple[int, int]] | None) -> list[int]:
    """``[H_0, W_0, H_1, W_1, ...]`` (what the custom ops take), or ``[]`` for None."""
    return [int(n) for hw in level_sizes or () for n in hw]


def _pairs(flat: Sequence[int]) -> list[tuple[int, int]]:
    """The inverse of :func:`_flat_sizes`."""
    return list(zip(flat[::2], flat[1::2]))


def _per_level(
    value: Tensor, shapes: list[tuple[int, int]], locations: Tensor
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """Per level: ``(h, w, values (N*M, D, h, w), locations (N*M, Lq, P, 2))``.

    value: (N, S, M, D); locations: (N, Lq, M, L, P, 2).
    """
    n, _, m, d = value.shape
    _, lq, _, _, n_points, _ = locations.shape
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    for level, (h, w) in enumerate(shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        level_value = value_per_level[level].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        level_loc = locations[:, :, :, level].transpose(1, 2).reshape(n * m, lq, n_points, 2)
        yield h, w, level_value, level_loc


def _grid(level_loc: Tensor, dtype: torch.dtype) -> Tensor:
    """grid_sample's grid: (x, y) in [-1, 1], in ``dtype``."""
    return (2 * level_loc - 1).to(dtype)


def _sample(level_value: Tensor, level_loc: Tensor) -> Tensor:
    """Bilinear samples, zero outside: (N*M, D, h, w) at (N*M, Lq, P, 2) -> (N*M, D, Lq, P).

    grid_sample, or where its backward would be refused in deterministic mode the same sampling
    by corner gathers (:func:`mask2former.ops.bilinear.sample`)."""
    if backward_refused(level_value, level_loc):
        b, lq, n_points, _ = level_loc.shape
        locations = level_loc.to(level_value.dtype).reshape(b, lq * n_points, 2)
        return bilinear.sample(level_value, locations).view(b, -1, lq, n_points)
    return F.grid_sample(
        level_value,
        _grid(level_loc, level_value.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[Sequence[int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Pure-PyTorch multi-scale deformable attention (see the module docstring for shapes).

    Computes in ``value``'s dtype; the other floating inputs are cast to it.
    ``level_start_index`` is implied by ``spatial_shapes`` and not read. ``spatial_shapes``
    may be given as Python ints, so that tracing and export need read no tensor data.
    """
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    levels = _per_level(value, static_shapes(spatial_shapes), sampling_locations)
    sampled = [_sample(level_value, level_loc) for _, _, level_value, level_loc in levels]
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.to(value.dtype).transpose(1, 2).reshape(n * m, 1, lq, -1)
    # (N*M, D, Lq, L, P) -> (N*M, D, Lq, L*P), weighted sum over levels and points
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    # (N*M, D, Lq) -> (N, Lq, M*D)
    return output.view(n, m * d, lq).transpose(1, 2).contiguous()


def _check_dtypes_and_devices(named: dict[str, Tensor]) -> None:
    for name in ("value", "sampling_locations", "attention_weights"):
        if not named[name].is_floating_point():
            raise TypeError(
                f"ms_deform_attn: {name} must be floating point, got {named[name].dtype}"
            )
    for name in ("spatial_shapes", "level_start_index"):
        if named[name].dtype != torch.int64:
            raise TypeError(f"ms_deform_attn: {name} must be int64, got {named[name].dtype}")
    devices = {name: t.device for name, t in named.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"ms_deform_attn: inputs are on different devices: {devices}")


def _check_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    """Shape, dtype and device checks that need no tensor data (traceable)."""
    _check_dtypes_and_devices(
        {
            "value": value,
            "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index,
            "sampling_locations": sampling_locations,
            "attention_weights": attention_weights,
        }
    )
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, D), got {tuple(value.shape)}")
    n, _, m, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), "
            f"got {tuple(sampling_locations.shape)}"
        )
    n_levels = sampling_locations.shape[3]
    if spatial_shapes.shape != (n_levels, 2) or level_start_index.shape != (n_levels,):
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must be (L, 2) and level_start_index (L,) with "
            f"L={n_levels} levels from sampling_locations, got {tuple(spatial_shapes.shape)} "
            f"and {tuple(level_start_index.shape)}"
        )
    if sampling_locations.shape[0] != n or sampling_locations.shape[2] != m:
        raise ValueError(
            f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does not match "
            f"value {tuple(value.shape)} in batch size N or number of heads M"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = "
            f"{tuple(sampling_locations.shape[:-1])}, got {tuple(attention_weights.shape)}"
        )


def _check_levels(
    spatial_shapes: Tensor, level_start_index: Tensor, num_values: int
) -> list[tuple[int, int]]:
    """Checks that read ``spatial_shapes`` and ``level_start_index`` (one copy to the host);
    returns the level sizes read."""
    # (L, 2) and (L,) -> one (3L,) tensor, read once
    starts = level_start_index.to(spatial_shapes.device)
    numbers = torch.cat([spatial_shapes.flatten(), starts]).tolist()
    num_levels = len(level_start_index)
    shapes, starts = _pairs(numbers[: 2 * num_levels]), numbers[2 * num_levels :]
    _check_sizes(shapes, num_values)
    expected = [sum(h * w for h, w in shapes[:i]) for i in range(len(shapes))]
    if starts != expected:
        raise ValueError(
            f"ms_deform_attn: level_start_index {starts} is inconsistent with spatial_shapes "
            f"{shapes} (expected {expected})"
        )
    return shapes


def _check_sizes(shapes: list[tuple[int, int]], num_values: int) -> None:
    """Level sizes (Python ints) positive and covering the ``num_values`` positions of value."""
    if any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f"ms_deform_attn: spatial_shapes must be positive, got {shapes}")
    total = sum(h * w for h, w in shapes)
    if total != num_values:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes {shapes} cover {total} positions but value has "
            f"S={num_values}"
        )


def _level_sizes(
    spatial_shapes: Tensor, level_start_index: Tensor, num_values: int, flat_sizes: list[int]
) -> list[tuple[int, int]]:
    """The checked level sizes as Python ints: from ``flat_sizes`` when given (nothing is read
    from the tensors), else read from the tensors (one copy to the host)."""
    if not flat_sizes:
        return _check_levels(spatial_shapes, level_start_index, num_values)
    shapes = _pairs(flat_sizes)
    _check_sizes(shapes, num_values)
    return shapes


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _kernel_inputs(
    path: KernelPath, value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(value, sampling_locations, attention_weights) in the dtypes ``path`` computes in."""
    if path is KernelPath.CUDA:
        compute, coords = value.dtype, _opmath_dtype(value.dtype)
    else:
        compute = coords = _opmath_dtype(value.dtype)
    return (
        value.to(compute).contiguous(),
        sampling_locations.to(coords).contiguous(),
        attention_weights.to(compute).contiguous(),
    )


@torch.library.custom_op("mask2former::ms_deform_attn", mutates_args=())
def _ms_deform_attn_op(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    level_sizes: list[int],
) -> Tensor:
    # level_sizes: [H_0, W_0, ...] as Python ints, or [] to read them from spatial_shapes
    sizes = _level_sizes(spatial_shapes, level_start_index, value.shape[1], level_sizes)
    path = _extension.select_path(value.device, force_reference=False)
    v, loc, attn = _kernel_inputs(path, value, sampling_locations, attention_weights)
    shapes, starts = spatial_shapes.contiguous(), level_start_index.contiguous()
    if path is KernelPath.CUDA:
        output = _extension.extension().ms_deform_attn_forward_cuda(v, shapes, starts, loc, attn)
    elif path is KernelPath.CPU:
        output = _extension.extension().ms_deform_attn_forward_cpu(v, shapes, starts, loc, attn)
    else:
        output = ms_deform_attn_reference(v, sizes, starts, loc, attn)
    return output.to(value.dtype)


@_ms_deform_attn_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, level_sizes):
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


@torch.library.custom_op("mask2former::ms_deform_attn_backward", mutates_args=())
def _ms_deform_attn_backward_op(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    level_sizes: list[int],
) -> tuple[Tensor, Tensor, Tensor]:
    path = _extension.select_path(value.device, force_reference=False)
    v, loc, attn = _kernel_inputs(path, value, sampling_locations, attention_weights)
    grad = grad_output.to(v.dtype).contiguous()
    shapes, starts = spatial_shapes.contiguous(), level_start_index.contiguous()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if path is KernelPath.CUDA:
        grads = _extension.extension().ms_deform_attn_backward_cuda(
            v, shapes, starts, loc, attn, grad, deterministic=deterministic
        )
    elif path is KernelPath.CPU:
        grads = _extension.extension().ms_deform_attn_backward_cpu(
            v, shapes, starts, loc, attn, grad, deterministic=deterministic
        )
    else:
        sizes = _pairs(level_sizes) if level_sizes else spatial_shapes
        grads = _reference_backward(v, sizes, starts, loc, attn, grad, deterministic)
    grad_value, grad_loc, grad_attn = grads
    return (
        grad_value.to(value.dtype),
        grad_loc.to(sampling_locations.dtype),
        grad_attn.to(attention_weights.dtype),
    )


@_ms_deform_attn_backward_op.register_fake
def _(
    grad_output,
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    level_sizes,
):
    return (
        torch.empty_like(value),
        torch.empty_like(sampling_locations),
        torch.empty_like(attention_weights),
    )


def _reference_backward(
    value: Tensor,
    spatial_shapes: Tensor | list[tuple[int, int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`ms_deform_attn_reference` (autograd is unavailable inside a custom
    op): from grid_sample's own backward, or with ``deterministic`` from
    :func:`mask2former.ops.bilinear.sample_backward`, which sums grad_value in a fixed order on
    every device (grid_sample's CUDA backward does not, and torch refuses it in deterministic
    mode). All inputs in one dtype; returns grads of value, sampling_locations and
    attention_weights."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    # (N, Lq, M*D) -> (N*M, D, Lq, 1); (N, Lq, M, L, P) -> (N*M, 1, Lq, L, P)
    grad = grad_output.view(n, lq, m, d).permute(0, 2, 3, 1).reshape(n * m, d, lq, 1)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels, n_points)
    grad_values, grad_locs, grad_weights = [], [], []
    levels = _per_level(value, static_shapes(spatial_shapes), sampling_locations)
    for level, (h, w, level_value, level_loc) in enumerate(levels):
        sampled = _sample(level_value, level_loc)  # (N*M, D, Lq, P)
        grad_weights.append((grad * sampled).sum(1))  # (N*M, Lq, P)
        grad_sampled = grad * weights[:, :, :, level]  # (N*M, D, Lq, P)
        if deterministic:
            grad_level_value, grad_level_loc = bilinear.sample_backward(
                grad_sampled.flatten(2), level_value, level_loc.flatten(1, 2)
            )
        else:
            # interpolation_mode 0 = bilinear, padding_mode 0 = zeros
            grad_level_value, grad_level_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_sampled, level_value, _grid(level_loc, value.dtype), 0, 0, False, [True, True]
            )
            grad_level_loc = 2 * grad_level_grid  # d grid / d location = 2
        # (N*M, D, H, W) -> (N, H*W, M, D); (N*M, Lq, P, 2) -> (N, Lq, M, P, 2)
        grad_values.append(grad_level_value.reshape(n, m, d, h * w).permute(0, 3, 1, 2))
        grad_locs.append(grad_level_loc.reshape(n, m, lq, n_points, 2).transpose(1, 2))
    grad_value = torch.cat(grad_values, dim=1)
    grad_loc = torch.stack(grad_locs, dim=3)
    # (N*M, Lq, L*P) -> (N, Lq, M, L, P)
    grad_attn = torch.stack(grad_weights, dim=2).view(n, m, lq, n_levels, n_points).transpose(1, 2)
    return grad_value.contiguous(), grad_loc.contiguous(), grad_attn.contiguous()


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, sizes = inputs
    ctx.save_for_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    ctx.level_sizes = sizes


def _backward(ctx, grad_output: Tensor):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
        ctx.saved_tensors
    )
    grad_value, grad_loc, grad_attn = _ms_deform_attn_backward_op(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.level_sizes,
    )
    return grad_value, None, None, grad_loc, grad_attn, None


_ms_deform_attn_op.register_autograd(_backward, setup_context=_setup_context)


def _autocast_cuda_dtype(value: Tensor):
    """The autocast dtype when ``value`` is on CUDA inside ``torch.autocast("cuda")``."""
    if value.device.type != "cuda" or not torch.is_autocast_enabled("cuda"):
        return None
    return torch.get_autocast_dtype("cuda")


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor | Sequence[Sequence[int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    level_sizes: Sequence[tuple[int, int]] | None = None,
) -> Tensor:
    """Multi-scale deformable attention; see the module docstring for shapes and precision.

    ``spatial_shapes`` is an (L, 2) int64 tensor or the same sizes as Python ints; with
    Python ints the forced reference path reads no tensor data (``torch.export``, ONNX).
    Given as a tensor alone, it and ``level_start_index`` are read and checked on the host,
    which on a GPU waits for the queued work: a caller that knows the sizes passes them too as
    ``level_sizes`` (Python ints, the same as ``spatial_shapes``; ``level_start_index`` must
    then agree with them), and nothing is read. The deformable encoder does so.

    Raises:
        TypeError: ``value``, ``sampling_locations`` or ``attention_weights`` not floating
            point, or ``spatial_shapes`` / ``level_start_index`` not int64.
        ValueError: inconsistent shapes, inputs on different devices, non-positive level
            sizes, or ``level_start_index`` / S inconsistent with ``spatial_shapes``.

    Example::

        >>> value = torch.randn(2, 5 * 5 + 3 * 3, 8, 32)
        >>> shapes = torch.tensor([[5, 5], [3, 3]])
        >>> starts = torch.tensor([0, 25])
        >>> loc, attn = torch.rand(2, 10, 8, 2, 4, 2), torch.rand(2, 10, 8, 2, 4)
        >>> ms_deform_attn(value, shapes, starts, loc, attn).shape
        torch.Size([2, 10, 256])
        >>> ms_deform_attn(value, shapes, starts, loc, attn, level_sizes=[(5, 5), (3, 3)]).shape
        torch.Size([2, 10, 256])
    """
    shapes = None
    if not isinstance(spatial_shapes, Tensor):
        if level_sizes is not None:
            raise ValueError(
                "ms_deform_attn: level_sizes goes with spatial_shapes as a tensor; spatial_shapes "
                "given as Python ints are the sizes already"
            )
        shapes = static_shapes(spatial_shapes)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.int64, device=value.device)
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    flat_sizes = _flat_sizes(level_sizes)
    if level_sizes is not None and len(flat_sizes) != spatial_shapes.numel():
        raise ValueError(
            f"ms_deform_attn: level_sizes {list(level_sizes)} must give (H_l, W_l) for each of "
            f"the L={len(spatial_shapes)} levels of spatial_shapes"
        )
    if _reference_forced():
        return _forced_reference(
            value,
            spatial_shapes if shapes is None else shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            flat_sizes,
        )
    autocast_dtype = _autocast_cuda_dtype(value)
    if autocast_dtype is not None:
        value, attention_weights = value.to(autocast_dtype), attention_weights.to(autocast_dtype)
    return _ms_deform_attn_op(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, flat_sizes
    )


def _forced_reference(
    value: Tensor,
    spatial_shapes: Tensor | list[tuple[int, int]],
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    flat_sizes: list[int],
) -> Tensor:
    """The reference as plain aten ops (traceable for export), in float32 or float64.

    With ``flat_sizes`` (the level sizes as Python ints) no tensor data is read.
    """
    if flat_sizes:
        spatial_shapes = _pairs(flat_sizes)
        _check_sizes(spatial_shapes, value.shape[1])
    elif not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        shapes_tensor = torch.as_tensor(spatial_shapes, dtype=torch.int64)
        _check_levels(shapes_tensor, level_start_index, value.shape[1])
    _extension.select_path(value.device, force_reference=True)  # logs the choice once
    compute = _opmath_dtype(value.dtype)
    output = ms_deform_attn_reference(
        value.to(compute),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(compute),
        attention_weights.to(compute),
    )
    return output.to(value.dtype)
