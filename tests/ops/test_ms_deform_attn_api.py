"""The op's front: input validation, dispatch, the forced reference path, loud failures, and the
package without its compiled extension."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mask2former.ops import (
    FORCE_REFERENCE_ENV,
    _extension,
    force_reference_path,
    ms_deform_attn,
    ms_deform_attn_reference,
)

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "mask2former"


@pytest.fixture
def inputs(make_inputs):
    return list(make_inputs(2, [(4, 5), (2, 3)], 2, 8, 6, 3, dtype=torch.float32))


def _replace(inputs, index, tensor):
    return [tensor if i == index else t for i, t in enumerate(inputs)]


BAD_INPUTS = {
    "value not 4-d": (0, lambda t: t[0], ValueError, "value must be"),
    "value integer": (0, lambda t: t.long(), TypeError, "value must be floating point"),
    "shapes int32": (1, lambda t: t.int(), TypeError, "spatial_shapes must be int64"),
    "starts int32": (2, lambda t: t.int(), TypeError, "level_start_index must be int64"),
    "too few levels": (1, lambda t: t[:1], ValueError, "spatial_shapes must be"),
    "starts wrong": (2, lambda t: t + 1, ValueError, "level_start_index .* inconsistent"),
    "S mismatch": (1, lambda t: t * 2, ValueError, "starts|inconsistent|cover"),
    "zero-size level": (1, lambda t: t * 0, ValueError, "must be positive"),
    "locations 5-d": (3, lambda t: t[..., 0], ValueError, "sampling_locations must be"),
    "heads mismatch": (3, lambda t: t[:, :, :1], ValueError, "number of heads"),
    "weights shape": (4, lambda t: t[..., :2], ValueError, "attention_weights must be"),
    "device mismatch": (4, lambda t: t.to("meta"), ValueError, "different devices"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_raise_documented_errors(inputs, case):
    index, corrupt, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        ms_deform_attn(*_replace(inputs, index, corrupt(inputs[index])))


def test_level_sizes_must_cover_value(inputs):
    value = inputs[0][:, :-1]  # one position short
    with pytest.raises(ValueError, match="cover 26 positions but value has S=25"):
        ms_deform_attn(value, *inputs[1:])


class _RaisingKernels:
    """Stands in for mask2former._C: every kernel raises, as a failing CUDA launch would."""

    with_cuda = True

    def __getattr__(self, name):
        def fail(*args):
            raise RuntimeError(f"{name}: simulated kernel failure")

        return fail


def test_kernel_errors_propagate_and_forced_reference_avoids_kernels(monkeypatch, inputs):
    monkeypatch.setattr(_extension, "_C", _RaisingKernels())
    with pytest.raises(RuntimeError, match="simulated kernel failure"):
        ms_deform_attn(*inputs)  # raised, never answered by a silent fallback
    expected = ms_deform_attn_reference(*inputs)
    with force_reference_path():
        torch.testing.assert_close(ms_deform_attn(*inputs), expected)
    monkeypatch.setenv(FORCE_REFERENCE_ENV, "1")
    torch.testing.assert_close(ms_deform_attn(*inputs), expected)


def test_forced_reference_traces_to_aten_ops(inputs):
    """Under force_reference_path a trace (as export uses) holds no mask2former custom op."""
    with force_reference_path():
        graph = torch.jit.trace(
            lambda v, loc, a: ms_deform_attn(v, inputs[1], inputs[2], loc, a),
            (inputs[0], inputs[3], inputs[4]),
            check_trace=False,
        ).graph
    assert "mask2former::" not in str(graph)
    assert "grid_sampler" in str(graph)


NO_EXTENSION_SCRIPT = textwrap.dedent("""
    import logging, sys
    # the extension cannot be imported (whether built in place or found by an editable install)
    sys.modules["mask2former._C"] = None
    import torch
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    import mask2former.ops as ops
    assert ops.__file__.startswith(sys.argv[2]), ops.__file__  # this checkout's package
    assert not ops.cpu_kernel_available() and ops.extension_import_error() is not None
    torch.manual_seed(0)
    module = ops.MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    shapes = torch.tensor([[5, 4], [3, 2]])
    starts = torch.tensor([0, 20])
    x = torch.randn(2, 26, 32, requires_grad=True)
    ref = torch.rand(2, 26, 2, 2)
    out = module(x, ref, x, shapes, starts)
    out.square().sum().backward()
    torch.save({"out": out.detach(), "grad": x.grad}, sys.argv[1])
    """)


def test_package_runs_without_extension_and_logs_it(tmp_path):
    """In a process where mask2former._C cannot be imported the package imports, runs forward
    and backward on the reference, says so in the log, and agrees with this process (which
    uses the kernel where it is built)."""
    result_file = tmp_path / "result.pt"
    repo_root = str(PACKAGE_DIR.parent)
    # MASK2FORMER_NO_JIT=1: no compiling on first use (tests/ops/test_ms_deform_attn_jit.py)
    env = {**os.environ, "PYTHONPATH": repo_root, "MASK2FORMER_NO_JIT": "1"}
    env.pop(FORCE_REFERENCE_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", NO_EXTENSION_SCRIPT, str(result_file), repo_root],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "using the pure-PyTorch reference" in proc.stderr
    assert "mask2former._C is not available" in proc.stderr

    from mask2former.ops import MSDeformAttn

    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    shapes, starts = torch.tensor([[5, 4], [3, 2]]), torch.tensor([0, 20])
    x = torch.randn(2, 26, 32, requires_grad=True)
    out = module(x, torch.rand(2, 26, 2, 2), x, shapes, starts)
    out.square().sum().backward()
    other = torch.load(result_file)
    torch.testing.assert_close(other["out"], out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other["grad"], x.grad, rtol=1e-5, atol=1e-5)


def test_level_sizes_as_python_ints_match_tensor(inputs):
    """spatial_shapes as Python ints (what the encoder passes for export) gives the same result
    on the dispatched and the forced reference path."""
    sizes = [tuple(hw) for hw in inputs[1].tolist()]
    expected = ms_deform_attn(*inputs)
    torch.testing.assert_close(ms_deform_attn(inputs[0], sizes, *inputs[2:]), expected)
    with force_reference_path():
        torch.testing.assert_close(ms_deform_attn(inputs[0], sizes, *inputs[2:]), expected)
    with pytest.raises(ValueError, match="inconsistent"):
        ms_deform_attn(inputs[0], [sizes[1], sizes[0]], *inputs[2:])


def test_level_sizes_beside_the_tensor_give_the_same_result_and_are_checked(inputs):
    """level_sizes (the encoder passes them, so nothing is read on the host) give the result of
    the tensors alone; they must be one (H, W) per level, cover S, and go with a tensor."""
    sizes = [tuple(hw) for hw in inputs[1].tolist()]
    expected = ms_deform_attn(*inputs)
    torch.testing.assert_close(ms_deform_attn(*inputs, level_sizes=sizes), expected)
    with force_reference_path():
        torch.testing.assert_close(ms_deform_attn(*inputs, level_sizes=sizes), expected)
    with pytest.raises(ValueError, match=r"level_sizes \[\(4, 5\)\] must give .* L=2 levels"):
        ms_deform_attn(*inputs, level_sizes=sizes[:1])
    with pytest.raises(ValueError, match="cover 40 positions but value has S=26"):
        ms_deform_attn(*inputs, level_sizes=[(4, 5), (4, 5)])
    with pytest.raises(ValueError, match="must be positive"):
        ms_deform_attn(*inputs, level_sizes=[(4, 5), (0, 3)])
    with pytest.raises(ValueError, match="level_sizes goes with spatial_shapes as a tensor"):
        ms_deform_attn(inputs[0], sizes, *inputs[2:], level_sizes=sizes)
