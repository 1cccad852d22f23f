"""Axis-aligned boxes in (x0, y0, x1, y1) absolute coordinates."""

from __future__ import annotations

from enum import IntEnum
from typing import Sequence, Union

import numpy as np
import torch

_RawBox = Union[Sequence[float], np.ndarray, torch.Tensor]


class BoxMode(IntEnum):
    """How the four numbers of a box are to be read (detectron2's values, stored in dataset dicts).

    ``XYXY_ABS``: (x0, y0, x1, y1) in pixels. ``XYWH_ABS``: (x0, y0, width, height) in pixels,
    the COCO annotation format.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1

    @staticmethod
    def convert(box: _RawBox, from_mode: "BoxMode", to_mode: "BoxMode") -> _RawBox:
        """Convert one box (4 numbers) or a (N, 4) array / tensor between modes.

        The result has the input's type: list or tuple in, the same out; array or tensor in,
        a new array or tensor of the same dtype out.
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        if isinstance(box, (list, tuple)):
            if len(box) != 4:
                raise ValueError(f"BoxMode.convert: a single box has 4 numbers, got {box!r}")
            converted = BoxMode.convert(np.asarray(box, dtype=np.float64), from_mode, to_mode)
            return type(box)(converted.tolist())
        arr = box.clone() if isinstance(box, torch.Tensor) else np.array(box, copy=True)
        if arr.shape[-1] != 4:
            raise ValueError(f"BoxMode.convert: expected (..., 4) boxes, got shape {arr.shape}")
        # xywh -> xyxy adds the size to the corner; xyxy -> xywh subtracts it
        sign = 1 if to_mode == BoxMode.XYXY_ABS else -1
        arr[..., 2:] = arr[..., 2:] + sign * arr[..., :2]
        return arr


class Boxes:
    """(N, 4) float tensor of XYXY boxes."""

    def __init__(self, tensor: torch.Tensor):
        tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.numel() == 0:
            tensor = tensor.reshape(-1, 4)
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes expects a (N, 4) tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Boxes":
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        return Boxes(self.tensor[item])

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "Boxes":
        return Boxes(self.tensor.to(*args, **kwargs))

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    def area(self) -> torch.Tensor:
        """(N,) areas."""
        b = self.tensor
        return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)

    def clip(self, box_size: tuple[int, int]) -> None:
        """Clip in place to an image of (height, width)."""
        h, w = box_size
        self.tensor[:, 0::2].clamp_(min=0, max=w)
        self.tensor[:, 1::2].clamp_(min=0, max=h)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """(N,) bool: boxes wider and taller than ``threshold``."""
        b = self.tensor
        return ((b[:, 2] - b[:, 0]) > threshold) & ((b[:, 3] - b[:, 1]) > threshold)

    @classmethod
    def cat(cls, boxes_list: list["Boxes"]) -> "Boxes":
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))
