"""Data structures passed between data loading, the model and evaluation."""

from .boxes import Boxes, BoxMode
from .image_list import ImageList
from .instances import Instances
from .masks import BitMasks, PolygonMasks, masks_to_boxes, polygons_to_bitmask
from .rle import RLEMasks, encode_label_map, encode_masks

__all__ = [
    "BitMasks",
    "Boxes",
    "BoxMode",
    "ImageList",
    "Instances",
    "PolygonMasks",
    "RLEMasks",
    "encode_label_map",
    "encode_masks",
    "masks_to_boxes",
    "polygons_to_bitmask",
]
