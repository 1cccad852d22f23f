"""The deterministic replacements (``mask2former.ops.deterministic``) equal the torch functions
they replace, forward and backward, and are used only where torch would refuse those.

On a CPU the replacements are forced by adding "cpu" to ``REFUSING_DEVICE_TYPES``. Tolerances:
float64 within 1e-12, float32 within 1e-6 of the largest value (matrix products and gathers
round in another order than the kernels). The CUDA tests (skipped without a GPU) check that torch
refuses the originals there, that the replacements run, give the same bits on every run and
match the originals computed outside deterministic mode.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling.point_sampling import point_sample
from mask2former.ops import bilinear, deterministic
from tests.ops.conftest import deterministic_mode

F64_TOL = 1e-12
F32_TOL = 1e-6


@pytest.fixture
def forced(monkeypatch):
    """Deterministic mode with the replacements forced on the CPU."""
    monkeypatch.setattr(deterministic, "REFUSING_DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    with deterministic_mode():
        yield


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    scale = expected.abs().max().clamp_min(1.0)
    error = float((actual.double() - expected.double()).abs().max() / scale)
    assert error <= tol, f"{what}: max error {error:.3g} of max |expected| exceeds {tol:g}"


def _value_and_grads(fn, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor | None = None):
    """fn's output and the gradients of its floating-point inputs for ``grad`` (default: a fixed
    random one)."""
    inputs = tuple(t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs)
    out = fn(*inputs)
    if grad is None:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    differentiable = [t for t in inputs if t.requires_grad]
    return (out.detach(), *torch.autograd.grad(out, differentiable, grad))


# --------------------------------------------------------------------------- #
# interpolate
# --------------------------------------------------------------------------- #
RESIZES = [
    ("bilinear", False, (5, 7), (10, 14)),  # x2, the pixel decoder's
    ("bilinear", False, (6, 5), (17, 3)),  # up along H, down along W, non-integer factors
    ("bilinear", True, (6, 5), (9, 11)),
    ("bicubic", None, (4, 6), (7, 13)),  # Swin's absolute positions
    ("bicubic", True, (5, 5), (3, 8)),
]


@pytest.mark.parametrize("mode, align_corners, in_size, out_size", RESIZES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)])
def test_matrix_interpolation_equals_interpolate_forward_and_backward(
    monkeypatch, mode, align_corners, in_size, out_size, dtype, tol
):
    x = torch.randn(2, 3, *in_size, dtype=dtype)

    def fn(t):
        return deterministic.interpolate(t, out_size, mode=mode, align_corners=align_corners)

    expected = _value_and_grads(fn, (x,))
    monkeypatch.setattr(deterministic, "REFUSING_DEVICE_TYPES", frozenset({"cpu"}))
    with deterministic_mode():
        out = fn(x.clone().requires_grad_())
        assert "Upsample" not in type(out.grad_fn).__name__  # the matrix products ran
        actual = _value_and_grads(fn, (x,))
    for name, a, e in zip(("output", "grad"), actual, expected):
        _close(a, e, tol, f"{mode} {in_size}->{out_size} {name}")


def test_interpolate_is_torchs_where_torch_allows_it(forced):
    """Without a gradient, or in nearest mode, the torch function runs even where forced."""
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(
            deterministic.interpolate(x, (8, 8)), F.interpolate(x, (8, 8), mode="bilinear")
        )
    out = deterministic.interpolate(x, (8, 8), mode="nearest")
    assert "Upsample" in type(out.grad_fn).__name__
    torch.use_deterministic_algorithms(False)
    assert "Upsample" in type(deterministic.interpolate(x, (8, 8)).grad_fn).__name__


def test_interpolation_matrix_rows_are_the_bilinear_weights():
    """x2 with align_corners=False: output 2i + 1 = 0.75 * x[i] + 0.25 * x[i + 1], the ends
    clamp to the border pixel, each row sums to 1."""
    a = deterministic.interpolation_matrix(3, 6, "bilinear", False)
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.75, 0.25, 0.0],
            [0.25, 0.75, 0.0],
            [0.0, 0.75, 0.25],
            [0.0, 0.25, 0.75],
            [0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(a, expected)
    with pytest.raises(ValueError, match="'nearest'"):
        deterministic.interpolation_matrix(3, 6, "nearest", None)


def test_matrix_interpolation_under_autocast_computes_in_float32(forced):
    """As F.interpolate does under CUDA autocast (upsampling is a float32 op there)."""
    x = torch.randn(1, 2, 4, 4).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deterministic.interpolate(x, (8, 8), align_corners=False)
    assert out.dtype == torch.float32
    expected = F.interpolate(x.detach().float(), (8, 8), mode="bilinear", align_corners=False)
    _close(out.detach(), expected, F32_TOL, "bfloat16 input under autocast")


# --------------------------------------------------------------------------- #
# cross_entropy
# --------------------------------------------------------------------------- #
def _classification_inputs(shape: tuple[int, ...], num_classes: int, ignore: int | None = None):
    gen = torch.Generator().manual_seed(0)
    n, *rest = shape
    logits = torch.randn(n, num_classes, *rest, generator=gen, dtype=torch.float64)
    target = torch.randint(num_classes, shape, generator=gen)
    if ignore is not None:
        target[torch.rand(shape, generator=gen) < 0.3] = ignore
    weight = torch.rand(num_classes, generator=gen, dtype=torch.float64) + 0.1
    return logits, target, weight


@pytest.mark.parametrize(
    "shape", [(2, 7), (2, 5, 6)]
)  # criterion (N, K+1, Q); per-pixel (N, K, H, W)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)])
def test_row_cross_entropy_equals_cross_entropy(monkeypatch, shape, dtype, tol):
    logits, target, weight = _classification_inputs(shape, 4, ignore=255)
    logits, weight = logits.to(dtype), weight.to(dtype)

    def fn(x):
        return deterministic.cross_entropy(x, target, weight, ignore_index=255)

    expected = _value_and_grads(fn, (logits,))
    monkeypatch.setattr(deterministic, "REFUSING_DEVICE_TYPES", frozenset({"cpu"}))
    with deterministic_mode():
        out = fn(logits.clone().requires_grad_())
        assert type(out.grad_fn).__name__ == "NllLossBackward0"  # 2-D, not NllLoss2DBackward0
        actual = _value_and_grads(fn, (logits,))
    for name, a, e in zip(("loss", "grad"), actual, expected):
        _close(a, e, tol, f"{shape} {name}")


# --------------------------------------------------------------------------- #
# point_sample
# --------------------------------------------------------------------------- #
def _point_inputs(dtype: torch.dtype = torch.float64):
    """Mask logits (3, 2, 7, 9) and 50 points per mask; in float64 some on a pixel centre and
    on the border, where the gradient of a coordinate jumps (in float32 the two sides of such a
    point round differently in grid_sample and in the gathers)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(3, 2, 7, 9, generator=gen, dtype=torch.float64)
    coords = torch.rand(3, 50, 2, generator=gen, dtype=torch.float64)
    if dtype == torch.float64:
        coords[0, 0] = torch.tensor([0.5 / 9, 0.5 / 7])  # exactly on pixel (0, 0)
        coords[1, 1] = torch.tensor([0.0, 1.0])  # the image's border
    return features.to(dtype), coords.to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)])
def test_gather_point_sample_equals_grid_sample(monkeypatch, dtype, tol):
    features, coords = _point_inputs(dtype)
    expected = _value_and_grads(point_sample, (features, coords))
    calls = []
    sample = bilinear.sample
    monkeypatch.setattr(bilinear, "sample", lambda *args: calls.append(1) or sample(*args))
    monkeypatch.setattr(deterministic, "REFUSING_DEVICE_TYPES", frozenset({"cpu"}))
    with deterministic_mode():
        actual = _value_and_grads(point_sample, (features, coords))
    assert calls == [1]
    for name, a, e in zip(("samples", "grad features", "grad coords"), actual, expected):
        _close(a, e, tol, f"{dtype} {name}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gather_point_sample_keeps_the_features_dtype(forced, dtype):
    """Low-precision mask logits are sampled at float32 coordinates and returned in their dtype."""
    features, coords = _point_inputs(torch.float32)
    out = point_sample(features.to(dtype).requires_grad_(), coords)
    assert out.dtype == dtype
    with deterministic_mode(False):
        expected = point_sample(features.to(dtype).float(), coords)
    _close(out.detach().float(), expected, 1e-2, f"{dtype} samples")


def test_point_sample_without_gradient_is_grid_sample(forced):
    """The matcher and the point selection sample without gradients: grid_sample, faster."""
    features, coords = _point_inputs()
    grid = 2.0 * coords.unsqueeze(2) - 1.0
    expected = F.grid_sample(features, grid, align_corners=False).squeeze(3)
    assert torch.equal(point_sample(features, coords), expected)


def test_grid_sample_cpu_backward_same_bits_every_run_and_thread_count():
    """Why point_sample keeps grid_sample on the CPU in deterministic mode: its backward, with
    many points per pixel, gives the same bits on every run, with one thread or two."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 5, 5, generator=gen)
    coords = torch.rand(4, 2000, 2, generator=gen)
    grad = torch.randn(4, 3, 2000, generator=gen)
    previous = torch.get_num_threads()
    runs = []
    try:
        with deterministic_mode():
            for threads in (2, 2, 1):
                torch.set_num_threads(threads)
                runs.append(_value_and_grads(point_sample, (features, coords), grad))
    finally:
        torch.set_num_threads(previous)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


# --------------------------------------------------------------------------- #
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------- #
def _cuda_case(name: str):
    """(torch's function, ours, inputs) of the case ``name``, on CUDA in float32."""
    if name == "interpolate":
        x = torch.randn(2, 8, 33, 47, device="cuda")
        return (
            lambda t: F.interpolate(t, size=(66, 94), mode="bilinear", align_corners=False),
            lambda t: deterministic.interpolate(t, (66, 94), mode="bilinear", align_corners=False),
            (x,),
        )
    if name == "point_sample":
        features, coords = _point_inputs(torch.float32)
        return (
            lambda f, c: F.grid_sample(f, 2 * c.unsqueeze(2) - 1, align_corners=False).squeeze(3),
            point_sample,
            (features.cuda(), coords.cuda()),
        )
    # the criterion's (N, K + 1, Q) class logits; the per-pixel baselines' (N, K, H, W)
    shape, num_classes, ignore = (
        ((4, 100), 81, -100) if name == "cross_entropy 3-D" else ((2, 64, 64), 19, 255)
    )
    logits, target, weight = _classification_inputs(shape, num_classes, ignore)
    target, weight = target.cuda(), weight.float().cuda()
    return (
        lambda t: F.cross_entropy(t, target, weight, ignore_index=ignore),
        lambda t: deterministic.cross_entropy(t, target, weight, ignore_index=ignore),
        (logits.float().cuda(),),
    )


CUDA_CASES = ["interpolate", "point_sample", "cross_entropy 3-D", "cross_entropy 4-D"]


@pytest.fixture
def cuda_deterministic(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.mark.cuda
@pytest.mark.parametrize("name", CUDA_CASES)
def test_cuda_torch_refuses_the_replaced_function(cuda_deterministic, name):
    """Why the replacements exist; if this fails, a torch release made one unnecessary."""
    original, _, inputs = _cuda_case(name)
    inputs = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in inputs)
    with deterministic_mode(), pytest.raises(RuntimeError, match="deterministic implementation"):
        original(*inputs).sum().backward()
        torch.cuda.synchronize()


@pytest.mark.cuda
@pytest.mark.parametrize("name", CUDA_CASES)
def test_cuda_replacement_same_bits_every_run_and_matches_torch(cuda_deterministic, name):
    original, replacement, inputs = _cuda_case(name)
    expected = _value_and_grads(original, inputs)
    with deterministic_mode():
        runs = [_value_and_grads(replacement, inputs) for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0])), name
    for a, e in zip(runs[0], expected):
        _close(a.cpu(), e.cpu(), 1e-5, name)
