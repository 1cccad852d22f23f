"""Compiling the kernels in ``ops/`` on first use, when ``mask2former._C`` was not installed.

A plain ``pip install -e .`` builds in an isolated environment without torch, so it installs no
extension. The first call that needs a kernel then compiles the same sources with
:func:`torch.utils.cpp_extension.load` into a cache directory, once per torch version, Python,
machine and source hash; later processes load the library from there. Concurrent processes are
serialised by torch's lock file in the build directory (an OS-level lock, released if its
holder dies).

Environment variables:

    MASK2FORMER_CACHE=DIR   cache directory (default ``$XDG_CACHE_HOME/mask2former``, else
                            ``~/.cache/mask2former``)
    MASK2FORMER_NO_JIT=1    never compile on first use
    MASK2FORMER_BUILD_CUDA=0  compile the CPU kernel only
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

NO_JIT_ENV = "MASK2FORMER_NO_JIT"
CACHE_ENV = "MASK2FORMER_CACHE"
#: Builds mask2former._C at install time against the torch already installed.
INSTALL_COMMAND = "pip install --no-build-isolation -e ."

_DONE_FILE = "library"  # the built library's file name, written once it has built and loaded
# as setup.py's _compile_args: at::parallel_for is an OpenMP region compiled into the library
_OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
_CFLAGS = ["-O3", *_OPENMP]
_CUDA_CFLAGS = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DWITH_CUDA"]


class JitUnavailable(RuntimeError):
    """The kernels could not be compiled or loaded; the message says why and what to do."""


def jit_disabled() -> bool:
    """True when ``MASK2FORMER_NO_JIT`` is "1"."""
    return os.environ.get(NO_JIT_ENV, "0") == "1"


def sources_dir() -> Path:
    """The kernel sources: ``ops/`` of a source checkout (editable install), else the copy that
    setup.py puts in the package as ``mask2former/ops/csrc``."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "ops", here / "csrc"):
        if (candidate / "bindings.cpp").is_file():
            return candidate
    raise JitUnavailable(
        f"no kernel sources (bindings.cpp) in {here.parents[1] / 'ops'} or {here / 'csrc'}"
    )


def cache_root() -> Path:
    """``$MASK2FORMER_CACHE``, else ``$XDG_CACHE_HOME/mask2former``, else ``~/.cache/mask2former``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "mask2former"


def _cuda_arch() -> str | None:
    """The visible GPUs' architectures (e.g. "9.0") when a CUDA kernel can be built, else None."""
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("MASK2FORMER_BUILD_CUDA", "1") == "0":
        return None
    if torch.version.cuda is None or CUDA_HOME is None or not torch.cuda.is_available():
        return None
    if not os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return None
    capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or ";".join(
        f"{a}.{b}" for a, b in sorted(capabilities)
    )


def _sources(root: Path, cuda_arch: str | None) -> list[Path]:
    sources = [root / "bindings.cpp", *sorted((root / "cpu").glob("*.cpp"))]
    if cuda_arch is not None:
        sources += sorted((root / "cuda").glob("*.cu"))
    return sources


def build_dir(root: Path, cuda_arch: str | None) -> Path:
    """``<cache>/kernels/<torch, Python, machine, variant>-<hash of the sources and flags>``."""
    digest = hashlib.sha256(repr((_CFLAGS, _CUDA_CFLAGS, cuda_arch)).encode())
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".cpp", ".h", ".cu")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    variant = "cpu" if cuda_arch is None else f"cuda{torch.version.cuda}"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    name = f"torch{torch.__version__}-{python}-{platform.machine()}-{variant}"
    return cache_root() / "kernels" / f"{name}-{digest.hexdigest()[:16]}".replace("+", "_")


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Puts the ninja of the ``ninja`` package (a dependency) and this Python's bin directory on
    PATH while building: torch runs ``ninja`` from PATH, which lacks them in an unactivated venv."""
    dirs = [os.path.dirname(sys.executable)]
    with contextlib.suppress(ImportError):
        import ninja

        dirs.insert(0, ninja.BIN_DIR)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([*dirs, old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _check_tools() -> None:
    from torch.utils.cpp_extension import get_cxx_compiler

    compiler = get_cxx_compiler()
    if shutil.which(compiler) is None:
        raise JitUnavailable(
            f"no C++ compiler: {compiler!r} ($CXX, default c++) was not found; install one "
            "(e.g. `apt-get install g++`) or set CXX to it"
        )
    if shutil.which("ninja") is None:
        raise JitUnavailable("ninja was not found; install it with `pip install ninja`")


def _import_library(directory: Path) -> ModuleType:
    """The library named in ``directory``'s done file (torch names it after the module)."""
    library = directory / (directory / _DONE_FILE).read_text().strip()
    spec = importlib.util.spec_from_file_location(library.name.split(".")[0], library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(root: Path, cuda_arch: str | None, directory: Path, why: str) -> ModuleType:
    from torch.utils.cpp_extension import load

    env = {"TORCH_CUDA_ARCH_LIST": cuda_arch} if cuda_arch is not None else {}
    with _ninja_on_path(), _temporary_env(env):
        _check_tools()
        logger.warning(
            "mask2former._C is not available (%s): compiling the deformable-attention kernels "
            "(%s) once, about %s, into %s",
            why,
            "CPU" if cuda_arch is None else f"CPU and CUDA for sm {cuda_arch}",
            "1 min on 2 cores" if cuda_arch is None else "a few minutes",
            directory,
        )
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        module = load(
            name="mask2former_C_" + ("cpu" if cuda_arch is None else "cuda"),
            sources=[str(p) for p in _sources(root, cuda_arch)],
            extra_cflags=_CFLAGS + (["-DWITH_CUDA"] if cuda_arch is not None else []),
            extra_cuda_cflags=_CUDA_CFLAGS,
            extra_ldflags=_OPENMP,
            build_directory=str(directory),
            with_cuda=cuda_arch is not None,
        )
    done = directory / f"{_DONE_FILE}.{os.getpid()}"
    done.write_text(Path(module.__file__).name)
    os.replace(done, directory / _DONE_FILE)
    logger.info("compiled the kernels in %.0f s", time.perf_counter() - start)
    return module


@contextlib.contextmanager
def _temporary_env(values: dict[str, str]) -> Iterator[None]:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# what torch.utils.cpp_extension.load raises when a tool is missing or a compile fails
_BUILD_ERRORS = (RuntimeError, OSError, subprocess.CalledProcessError, ImportError)


def _load_variant(root: Path, cuda_arch: str | None, why: str) -> ModuleType:
    directory = build_dir(root, cuda_arch)
    if (directory / _DONE_FILE).is_file():
        logger.info("loading the deformable-attention kernels from %s", directory)
        try:
            return _import_library(directory)
        except (OSError, ImportError) as exc:  # e.g. the library was deleted: build it again
            logger.warning(
                "cannot load the kernels from %s (%s); compiling them again", directory, exc
            )
    try:
        return _compile(root, cuda_arch, directory, why)
    except JitUnavailable:
        raise
    except _BUILD_ERRORS as exc:
        output = str(exc).strip()[-2000:]
        raise JitUnavailable(
            f"compiling {directory} failed ({type(exc).__name__}): {output}"
        ) from exc


def load_kernels(why: str) -> ModuleType:
    """The kernels compiled from ``ops/`` (with CUDA when a GPU and nvcc are there), built on the
    first call and loaded from the cache later; ``why`` says why mask2former._C is not used.
    Raises JitUnavailable saying why it failed and what to do."""
    if jit_disabled():
        raise JitUnavailable(
            f"{NO_JIT_ENV}=1 disables that (unset it to compile them once into {cache_root()})"
        )
    root = sources_dir()
    cuda_arch = _cuda_arch()
    if cuda_arch is None:
        return _load_variant(root, None, why)
    try:
        return _load_variant(root, cuda_arch, why)
    except JitUnavailable as exc:
        logger.warning("the CUDA kernel failed to compile (%s); compiling the CPU kernel only", exc)
        return _load_variant(root, None, why)
