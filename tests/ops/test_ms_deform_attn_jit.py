"""Without mask2former._C (a plain, isolated ``pip install -e .``) the kernels are compiled from
``ops/`` on first use into a cache, and every way that can fail names a command that works."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mask2former.ops import (
    FORCE_REFERENCE_ENV,
    _extension,
    _jit,
    ms_deform_attn,
    ms_deform_attn_reference,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs the op (forward and backward, float64) in a process where mask2former._C cannot be
# imported, checks it against the reference and prints where the kernels came from.
FIRST_USE_SCRIPT = textwrap.dedent("""
    import logging, sys
    sys.modules["mask2former._C"] = None  # as after an install that built no extension
    import torch
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from mask2former.ops import _extension, ms_deform_attn, ms_deform_attn_reference
    assert _extension.__file__.startswith(sys.argv[1]), _extension.__file__  # this checkout's
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(2, 26, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    shapes, starts = torch.tensor([[5, 4], [3, 2]]), torch.tensor([0, 20])
    loc = (torch.rand(2, 6, 2, 2, 3, 2, dtype=torch.float64, generator=gen) * 1.4 - 0.2)
    attn = torch.rand(2, 6, 2, 2, 3, dtype=torch.float64, generator=gen)
    out = ms_deform_attn(value, shapes, starts, loc, attn)
    expected = ms_deform_attn_reference(value, shapes, starts, loc, attn)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), value)
    torch.testing.assert_close(grads, torch.autograd.grad(expected.square().sum(), value))
    print("kernels:", _extension._ORIGIN if _extension.cpu_kernel_available() else None)
    """)


def _start(cache: Path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), _jit.CACHE_ENV: str(cache)}
    for name in (FORCE_REFERENCE_ENV, _jit.NO_JIT_ENV, "MASK2FORMER_BUILD_CUDA"):
        environ.pop(name, None)
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-c", FIRST_USE_SCRIPT, str(REPO_ROOT)],
        env=environ,
        cwd=cache.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr
    return stdout, stderr


@pytest.mark.slow
def test_first_use_compiles_once_into_cache_then_loads(tmp_path):
    """Two processes start at once with an empty cache: one compiles (about a minute), the other
    waits on torch's lock; both then run the kernel, equal to the reference. A third process
    loads the library from the cache without compiling."""
    cache = tmp_path / "cache"
    procs = [_start(cache, MASK2FORMER_BUILD_CUDA="0") for _ in range(2)]
    results = [_finish(proc, timeout=900) for proc in procs]
    libraries = list((cache / "kernels").glob("*/mask2former_C_cpu.so"))
    assert len(libraries) == 1, libraries
    for stdout, stderr in results:
        assert f"kernels: {libraries[0]}" in stdout, stderr
    assert any("compiling the deformable-attention kernels (CPU) once" in e for _, e in results)
    # ninja ran each step once: two objects and the library (the waiting process built nothing)
    steps = (libraries[0].parent / ".ninja_log").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[3] for line in steps) == [
        "bindings.o",
        "mask2former_C_cpu.so",
        "ms_deform_attn_cpu.o",
    ]

    stdout, stderr = _finish(_start(cache, MASK2FORMER_BUILD_CUDA="0"), timeout=120)
    assert f"kernels: {libraries[0]}" in stdout, stderr
    assert "loading the deformable-attention kernels from" in stderr
    assert "compiling" not in stderr


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def without_extension(monkeypatch, tmp_path) -> _Records:
    """This process as if mask2former._C were not installed, with an empty cache; collects the
    log of mask2former.ops (the "mask2former" logger may not propagate to caplog)."""
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_IMPORT_ERROR", "ImportError: simulated")
    monkeypatch.setattr(_extension, "_JIT_TRIED", False)
    monkeypatch.setattr(_extension, "_JIT_ERROR", None)
    monkeypatch.setattr(_extension, "_ORIGIN", "mask2former._C")
    monkeypatch.setattr(_extension, "_LOGGED", set())
    monkeypatch.setenv(_jit.CACHE_ENV, str(tmp_path / "cache"))
    for name in (FORCE_REFERENCE_ENV, _jit.NO_JIT_ENV):
        monkeypatch.delenv(name, raising=False)
    records = _Records()
    for logger in (_extension.logger, _jit.logger):
        logger.addHandler(records)
        monkeypatch.setattr(logger, "level", logging.INFO)
    yield records
    for logger in (_extension.logger, _jit.logger):
        logger.removeHandler(records)


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"CXX": "/nonexistent/c++"}, "no C++ compiler: '/nonexistent/c++'"),
        ({_jit.NO_JIT_ENV: "1"}, f"{_jit.NO_JIT_ENV}=1 disables that"),
    ],
    ids=["no compiler", "jit disabled"],
)
def test_no_kernels_warns_with_reason_and_working_command(
    without_extension, monkeypatch, make_inputs, tmp_path, env, reason
):
    """When the kernels cannot be compiled the op still runs, on the reference, and one warning
    names the reason and the install command that builds them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inputs = make_inputs(2, [(4, 5), (2, 3)], 2, 8, 6, 3)
    torch.testing.assert_close(ms_deform_attn(*inputs), ms_deform_attn_reference(*inputs))
    assert not _extension.cpu_kernel_available()
    (warning,) = [m for m in without_extension.messages if "pure-PyTorch reference" in m]
    assert "using the pure-PyTorch reference (grid_sample), slower" in warning
    assert "mask2former._C is not available (ImportError: simulated)" in warning
    assert reason in warning
    assert f"`{_jit.INSTALL_COMMAND}`" in warning
    assert not any("compiling" in m for m in without_extension.messages)
    assert not (tmp_path / "cache" / "kernels").exists()


def test_build_dir_is_keyed_by_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv(_jit.CACHE_ENV, str(tmp_path / "cache"))
    sources = tmp_path / "ops"
    shutil.copytree(_jit.sources_dir(), sources)
    first = _jit.build_dir(sources, cuda_arch=None)
    assert first.parent == tmp_path / "cache" / "kernels"
    assert _jit.build_dir(sources, cuda_arch=None) == first
    assert _jit.build_dir(sources, cuda_arch="9.0") != first
    with open(sources / "cpu" / "ms_deform_attn_cpu.cpp", "a") as f:
        f.write("\n// edited\n")
    assert _jit.build_dir(sources, cuda_arch=None) != first


def test_cache_root_defaults_to_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(_jit.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _jit.cache_root() == tmp_path / "mask2former"


def test_installed_package_carries_the_kernel_sources(tmp_path):
    """A non-editable install (wheel) has no ops/ beside the package: setup.py copies the sources
    into mask2former/ops/csrc, where sources_dir finds them."""
    build_lib = tmp_path / "lib"
    env = {**os.environ, "MASK2FORMER_BUILD_EXT": "0"}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build_lib)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    shipped = build_lib / "mask2former" / "ops" / "csrc"
    kernel_files = {".cpp", ".h", ".cu"}
    expected = {p.relative_to(REPO_ROOT / "ops") for p in (REPO_ROOT / "ops").rglob("*")}
    assert {p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()} == {
        p for p in expected if p.suffix in kernel_files
    }
    found = subprocess.run(
        [sys.executable, "-c", "from mask2former.ops import _jit; print(_jit.sources_dir())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(build_lib)},
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == str(shipped)
