"""Mask2Former and MaskFormer: universal image segmentation on PyTorch."""

__version__ = "0.1.0"
