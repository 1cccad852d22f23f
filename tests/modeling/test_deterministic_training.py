"""Training steps of tiny models in deterministic mode.

On a CPU the replacements of ``mask2former.ops.deterministic`` (which deterministic mode uses on
CUDA) are forced by adding "cpu" to ``REFUSING_DEVICE_TYPES``: every head family then trains
through them, with the losses and gradients of the default path (float32: within 1e-5 of the
largest value) and the same bits on every run. On a GPU (skipped without one) a training step
of each family runs under ``torch.use_deterministic_algorithms(True)`` without torch refusing
any op, and two runs of a few optimizer steps give the same weights bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mask2former.ops import bilinear, deterministic
from tests.modeling.tiny import (
    build_tiny_model,
    build_tiny_video_model,
    training_input,
    video_training_input,
)
from tests.ops.conftest import deterministic_mode

TOL = 1e-5

#: Tiny models: (tiny config name, overrides), one per path through the replacements.
MODELS = {
    # deformable pixel decoder (bilinear upsampling), point-sampled mask loss, class loss
    "mask2former": ("mask2former", {}),
    # full-resolution mask loss (bilinear upsampling of the masks)
    "maskformer_fpn": ("maskformer_fpn", {}),
    # per-pixel cross-entropy over (N, K, H, W) after bilinear upsampling
    "per_pixel": ("per_pixel", {}),
    # Swin with absolute positions (bicubic upsampling)
    "mask2former_swin_ape": (
        "mask2former",
        {
            "MODEL__BACKBONE__NAME": "D2SwinTransformer",
            "MODEL__SWIN__EMBED_DIM": 16,
            "MODEL__SWIN__DEPTHS": [1, 1, 1, 1],
            "MODEL__SWIN__NUM_HEADS": [1, 1, 2, 2],
            "MODEL__SWIN__APE": True,
            "MODEL__SWIN__PRETRAIN_IMG_SIZE": 32,
        },
    ),
}


def _build(name: str, device: str = "cpu"):
    if name == "video":
        return build_tiny_video_model(MODEL__DEVICE=device)
    config, overrides = MODELS.get(name, (name, {}))
    return build_tiny_model(config, MODEL__DEVICE=device, **overrides)


def _inputs(name: str) -> list[dict]:
    if name == "video":
        return [video_training_input(seed=0), video_training_input(seed=1)]
    return [training_input(seed=0), training_input(48, 64, seed=1)]


def _losses_and_grads(model, inputs: list[dict]) -> tuple[dict, dict]:
    """One forward and backward in training mode, the random points drawn from seed 0."""
    model.train()
    model.zero_grad()
    torch.manual_seed(0)
    losses = model(inputs)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def _assert_close(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys()
    for key, e in expected.items():
        scale = e.abs().max().clamp_min(1.0)
        error = float((actual[key] - e).abs().max() / scale)
        assert error <= TOL, f"{what} {key}: max error {error:.3g} of max |expected|"


@pytest.fixture
def forced(monkeypatch) -> set[str]:
    """The replacements forced on the CPU; returns the set of the calls seen: "sample" (point
    sampling by gathers), "matrix <mode>" (interpolation), "cross_entropy <dims>-D"."""
    monkeypatch.setattr(deterministic, "REFUSING_DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    calls: set[str] = set()

    def record(module, name, describe):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.add(describe(*args))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    record(bilinear, "sample", lambda *args: "sample")
    record(deterministic, "interpolation_matrix", lambda *args: f"matrix {args[2]}")
    record(F, "cross_entropy", lambda logits, *args: f"cross_entropy {logits.dim()}-D")
    return calls


@pytest.mark.parametrize("name", [*MODELS, "video"])
def test_forced_replacements_train_like_the_default_path_with_the_same_bits(forced, name):
    model = _build(name)
    inputs = _inputs(name)
    expected = _losses_and_grads(model, inputs)
    assert {c for c in forced if not c.startswith("cross_entropy")} == set()  # mode off: torch's
    forced.clear()
    with deterministic_mode():
        runs = [_losses_and_grads(model, inputs) for _ in range(2)]
    # every family went through the replacements it needs, and only through them
    point_loss = name in ("mask2former", "mask2former_swin_ape", "video")
    assert ("sample" in forced) == point_loss
    assert "matrix bilinear" in forced
    assert ("matrix bicubic" in forced) == (name == "mask2former_swin_ape")
    assert {c for c in forced if c.startswith("cross_entropy")} == {"cross_entropy 2-D"}
    for a, b in zip(runs[0], runs[1]):
        assert all(torch.equal(a[k], b[k]) for k in a), "deterministic runs differ"
    _assert_close(runs[0][0], expected[0], "loss")
    _assert_close(runs[0][1], expected[1], "grad of")


# --------------------------------------------------------------------------- #
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------- #
@pytest.fixture
def cuda_deterministic(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with deterministic_mode():
        yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", [*MODELS, "per_pixel_plus", "maskformer_encoder", "video"])
def test_cuda_training_step_runs_in_deterministic_mode(cuda_deterministic, name, dtype):
    """torch raises for any op without a deterministic CUDA implementation: none is left."""
    model = _build(name, "cuda").train()
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model(_inputs(name))
    sum(losses.values()).backward()
    torch.cuda.synchronize()
    assert all(torch.isfinite(v) for v in losses.values())


def _train(name: str, steps: int) -> dict[str, torch.Tensor]:
    """``steps`` AdamW steps of the tiny model on CUDA; its weights after them."""
    model = _build(name, "cuda").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        sum(model(_inputs(name)).values()).backward()
        optimizer.step()
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["mask2former", "maskformer_fpn"])
def test_cuda_two_training_runs_give_the_same_weights(cuda_deterministic, name):
    first, second = _train(name, 3), _train(name, 3)
    initial = _build(name).state_dict()
    assert any(not torch.equal(first[k], initial[k]) for k in first)  # the weights moved
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert different == [], f"weights differ between runs: {different[:5]}"
