"""The part of detectron2's PointRend project that Mask2Former's mappers import.

``ColorAugSSDTransform`` is :class:`mask2former.data.transforms.ColorAugSSDTransform`.
"""

from mask2former.data.transforms import ColorAugSSDTransform

__all__ = ["ColorAugSSDTransform"]
