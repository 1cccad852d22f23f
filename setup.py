"""Install mask2former. The deformable-attention kernels in ops/ are built when possible."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.4",
    "torchvision>=0.19",
    "fvcore>=0.1.5",
    "iopath>=0.1.9",
    "pycocotools>=2.0.6",
    "opencv-python-headless>=4.5",
    "scipy>=1.7",
    "numpy>=1.21",
    "pillow>=9.0",
    "tqdm>=4.60",
    "tensorboard>=2.10",
    "safetensors>=0.4",
    "PyYAML>=5.4",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=7", "pytest-xdist>=3", "transformers>=4.40", "cityscapesscripts>=2.2"],
    "export": ["onnx>=1.15", "onnxscript"],
    "dev": ["black", "isort", "ruff"],
}

setup(
    name="mask2former",
    version="0.1.0",
    description="Mask2Former and MaskFormer: universal image segmentation on PyTorch",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "demo", "benchmarks")),
    package_data={"mask2former": ["data/datasets/metadata/*.json"]},
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
