"""Install mask2former. The deformable-attention kernels in ops/ are built when possible.

Torch must be importable here to build them: `pip install --no-build-isolation -e .` after
installing torch. A plain `pip install -e .` builds in an isolated environment without torch and
installs no extension; the package then compiles the same sources on first use into a cache
(mask2former/ops/_jit.py), which is why the sources also ship inside the package.

The extension ``mask2former._codec`` (ops/codec/codec.c, plain C, no torch needed) holds the
evaluation's RLE and PNG loops; it is built by every install that has a C compiler, isolated
or not, and without it the package uses pycocotools / pyspng / OpenCV for the same results.

The extension ``mask2former._C`` holds the C++ CPU kernel (always attempted) and the CUDA kernel
(built when torch is a CUDA build and a CUDA toolkit is found, or when FORCE_CUDA=1, for the
architectures in TORCH_CUDA_ARCH_LIST). Environment variables:

    FORCE_CUDA=1               build the CUDA kernel even without a visible GPU; any compile
                               error then fails the install (CI relies on this)
    MASK2FORMER_BUILD_CUDA=0   skip the CUDA kernel (quick local builds)
    MASK2FORMER_BUILD_EXT=0    build no extension at all (pure-PyTorch / Python paths only)
    CUDA_HOME                  the CUDA toolkit, e.g. /usr/local/cuda

Without FORCE_CUDA a failed compile is reported with a warning and the install goes on (with a
CPU-only extension when only the CUDA part failed, else with none); the package then logs which
path it uses.
"""

import glob
import os
import subprocess
import sys
import warnings

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

INSTALL_REQUIRES = [
    "torch>=2.4",
    "torchvision>=0.19",
    "fvcore>=0.1.5",
    "iopath>=0.1.9",
    "pycocotools>=2.0.6",
    "opencv-python-headless>=4.5",
    "scipy>=1.7",
    "shapely>=2.0",  # polygon crops (fvcore's CropTransform.apply_polygons)
    "numpy>=1.21",
    "pillow>=9.0",
    "pyspng>=0.1.2",  # libspng: the panoptic evaluator's PNG decoder without mask2former._codec
    "zlib-ng>=0.4",  # PNG inflate / deflate several times faster than zlib's
    "tqdm>=4.60",
    "tensorboard>=2.10",
    "safetensors>=0.4",
    "PyYAML>=5.4",
    "tabulate>=0.8",  # checkpoint.matching's table of unmatched keys
    "ninja>=1.11",  # compiles the kernels on first use when the install built none
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=7",
        "pytest-xdist>=3",
        "transformers>=4.40",
        "cityscapesscripts>=2.2",
        "onnx>=1.15",
        "onnxscript",
        "onnxruntime>=1.17",
        "black>=24",
        "ruff>=0.5",
        "vermin>=1.6",  # .ci/run: nothing newer than python_requires
    ],
    "export": ["onnx>=1.15", "onnxscript", "onnxruntime>=1.17"],
    "dev": ["black>=24", "isort", "ruff>=0.5"],
}

ROOT = os.path.dirname(os.path.abspath(__file__))
KERNEL_SOURCES = "mask2former.ops.csrc"  # ops/, as package data
BUILD_ERRORS = (CompileError, LinkError, OSError, RuntimeError, subprocess.CalledProcessError)


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default) == "1"


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _compile_args(with_cuda: bool) -> dict:
    cxx = ["-O3"]
    if sys.platform.startswith("linux"):
        # at::parallel_for is an OpenMP region compiled into the extension itself
        cxx.append("-fopenmp")
    args = {"cxx": cxx}
    if with_cuda:
        args["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return args


def _make_extension(with_cuda: bool):
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = _sources("ops/bindings.cpp") + _sources("ops/cpu/*.cpp")
    kwargs = {
        "name": "mask2former._C",
        "extra_compile_args": _compile_args(with_cuda),
        "extra_link_args": ["-fopenmp"] if sys.platform.startswith("linux") else [],
    }
    if with_cuda:
        sources += _sources("ops/cuda/*.cu")
        return CUDAExtension(sources=sources, define_macros=[("WITH_CUDA", None)], **kwargs)
    return CppExtension(sources=sources, **kwargs)


def _make_cpu_only(ext) -> None:
    """Turns the CUDA extension ``ext`` into the CPU-only one, keeping the object."""
    cpu = _make_extension(with_cuda=False)
    for attr in (
        "sources",
        "include_dirs",
        "define_macros",
        "library_dirs",
        "libraries",
        "runtime_library_dirs",
        "extra_compile_args",
        "extra_link_args",
    ):
        setattr(ext, attr, getattr(cpu, attr))


def _want_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("MASK2FORMER_BUILD_CUDA", "1") == "0":
        return False
    if _env_flag("FORCE_CUDA", "0"):
        return True
    if torch.version.cuda is None or CUDA_HOME is None:
        return False
    if not os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime.h")):
        # e.g. CUDA_HOME guessed from an nvcc wrapper script outside the toolkit
        warnings.warn(f"no CUDA headers under CUDA_HOME={CUDA_HOME}; set CUDA_HOME to the toolkit")
        return False
    return True


CODEC = Extension(
    "mask2former._codec",
    sources=["ops/codec/codec.c"],
    extra_compile_args=["-O3"] if sys.platform != "win32" else ["/O2"],
)


class BuildCodecFirst(build_ext):
    """Builds mask2former._codec with setuptools' own C build (a failure only warns), then
    the other extensions by ``build_others`` (torch's BuildExtension, in a subclass, would
    compile the C file with C++ flags)."""

    def build_extensions(self) -> None:
        built = []
        for ext in [e for e in self.extensions if e.name == CODEC.name]:
            try:
                build_ext.build_extension(self, ext)
                built.append(ext)
            except BUILD_ERRORS as exc:
                warnings.warn(
                    f"mask2former._codec failed to build ({exc}); evaluation uses pycocotools, "
                    "pyspng and OpenCV instead (same results, slower)"
                )
        self.extensions = [e for e in self.extensions if e.name != CODEC.name]
        if self.extensions:
            self.build_others()  # may drop what failed
        # what is listed here is what an editable install copies next to the sources
        self.extensions = built + self.extensions

    def build_others(self) -> None:
        build_ext.build_extensions(self)


def _extension_build():
    """(ext_modules, cmdclass): the codec, and the kernels when torch is importable at build
    time."""
    if os.environ.get("MASK2FORMER_BUILD_EXT", "1") == "0":
        warnings.warn(
            "MASK2FORMER_BUILD_EXT=0: mask2former._C and mask2former._codec are not built"
        )
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError as exc:
        if _env_flag("FORCE_CUDA", "0"):
            raise RuntimeError(f"FORCE_CUDA=1 but torch is not importable: {exc}") from exc
        warnings.warn(
            f"torch is not importable at build time ({exc}), as in pip's default isolated build: "
            "mask2former._C is not built, and the package compiles its kernels on first use "
            "(about 1 min, once). To build them now, against the torch already installed: "
            "`pip install --no-build-isolation -e .`"
        )
        return [CODEC], {"build_ext": BuildCodecFirst}

    class BuildKernels(BuildCodecFirst, BuildExtension):
        """Builds mask2former._codec, then mask2former._C; without FORCE_CUDA a failed
        compile of the kernels only warns."""

        def build_others(self) -> None:
            strict = _env_flag("FORCE_CUDA", "0")
            try:
                BuildExtension.build_extensions(self)
                return
            except BUILD_ERRORS as exc:
                if strict:
                    raise
                failure = exc
            if any(src.endswith(".cu") for ext in self.extensions for src in ext.sources):
                warnings.warn(f"CUDA kernel failed to build ({failure}); retrying CPU-only")
                for ext in self.extensions:  # in place: setuptools has annotated these objects
                    _make_cpu_only(ext)
                try:
                    BuildExtension.build_extensions(self)
                    return
                except BUILD_ERRORS as exc:
                    failure = exc
            self.extensions = []
            warnings.warn(
                f"mask2former._C failed to build ({failure}); the package will use the "
                "pure-PyTorch reference for deformable attention"
            )

    try:
        ext = _make_extension(with_cuda=_want_cuda())
    except BUILD_ERRORS as exc:  # e.g. CUDA libraries not found while declaring the extension
        if _env_flag("FORCE_CUDA", "0"):
            raise
        warnings.warn(f"CUDA extension unavailable ({exc}); building the CPU kernel only")
        ext = _make_extension(with_cuda=False)
    return [CODEC, ext], {"build_ext": BuildKernels.with_options(use_ninja=True)}


EXT_MODULES, CMDCLASS = _extension_build()

setup(
    name="mask2former",
    version="0.1.0",
    description="Mask2Former and MaskFormer: universal image segmentation on PyTorch",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "demo", "benchmarks"))
    + [KERNEL_SOURCES],
    # the kernel sources go into the package too, for compiling on first use after an install
    # that built no extension (mask2former/ops/_jit.py finds them there)
    package_dir={KERNEL_SOURCES: "ops"},
    package_data={
        "mask2former": ["data/datasets/metadata/*.json"],
        KERNEL_SOURCES: ["*.cpp", "*.h", "cpu/*.cpp", "cpu/*.h", "cuda/*.cu"],
    },
    python_requires=">=3.10",  # X | Y is evaluated at import; .ci/run checks nothing needs more
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
)
