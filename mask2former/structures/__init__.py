"""Data structures passed between data loading, the model and evaluation."""

from .boxes import Boxes, BoxMode
from .image_list import ImageList
from .instances import Instances
from .masks import BitMasks

__all__ = ["BitMasks", "Boxes", "BoxMode", "ImageList", "Instances"]
