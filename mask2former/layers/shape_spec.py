"""Shape of a feature map, as detectron2's ``ShapeSpec``."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ShapeSpec:
    """Channels, spatial size and stride of a tensor; unknown fields are None."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None
