"""Per-instance binary masks."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from .boxes import Boxes


class BitMasks:
    """(N, H, W) bool tensor, one binary mask per instance."""

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray]):
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(tensor))
        tensor = tensor.to(torch.bool)
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks expects (N, H, W), got shape {tuple(tensor.shape)}")
        self.tensor = tensor
        self.image_size = tuple(tensor.shape[1:])

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "BitMasks":
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        return BitMasks(self.tensor[item])

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self)}, image_size={self.image_size})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "BitMasks":
        return BitMasks(self.tensor.to(*args, **kwargs))

    def area(self) -> torch.Tensor:
        """(N,) number of pixels of each mask."""
        return self.tensor.flatten(1).sum(dim=1)

    def nonempty(self) -> torch.Tensor:
        """(N,) bool: masks with at least one pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self) -> Boxes:
        """Tight XYXY boxes (zeros for empty masks)."""
        boxes = torch.zeros(len(self), 4, dtype=torch.float32, device=self.device)
        rows = self.tensor.any(dim=2)
        cols = self.tensor.any(dim=1)
        for i in range(len(self)):
            ys = torch.where(rows[i])[0]
            xs = torch.where(cols[i])[0]
            if len(ys) and len(xs):
                boxes[i] = torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]).float()
        return Boxes(boxes)

    @staticmethod
    def cat(masks_list: list["BitMasks"]) -> "BitMasks":
        return BitMasks(torch.cat([m.tensor for m in masks_list], dim=0))
