"""A batch of images of different sizes, padded into one tensor."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F


class ImageList:
    """Images padded to a common size; ``image_sizes[i]`` is image i's true (h, w).

    Attributes:
        tensor: (N, C, H, W) padded batch.
        image_sizes: list of (h, w) before padding.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Image ``idx`` without its padding: (C, h, w)."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    def padding_mask(self) -> torch.Tensor:
        """(N, H, W) bool, True on padded pixels."""
        n, _, height, width = self.tensor.shape
        mask = torch.ones((n, height, width), dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(self.image_sizes):
            mask[i, :h, :w] = False
        return mask

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: dict | None = None,
    ) -> "ImageList":
        """Pad ``tensors`` (each (..., h, w), same leading dims) at the bottom and right.

        The padded size is the largest h and w, rounded up to ``size_divisibility``;
        ``padding_constraints`` may give "size_divisibility" or "square_size" as detectron2.
        """
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs at least one tensor")
        leading = tensors[0].shape[:-2]
        for t in tensors:
            if t.shape[:-2] != leading:
                raise ValueError(f"tensors differ in leading dims: {t.shape} vs {leading}")
        if padding_constraints:
            square = padding_constraints.get("square_size", 0)
            if square > 0:
                size_divisibility = 0
            else:
                size_divisibility = padding_constraints.get("size_divisibility", size_divisibility)
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if padding_constraints and padding_constraints.get("square_size", 0) > 0:
            square = padding_constraints["square_size"]
            if max(max_h, max_w) > square:
                raise ValueError(f"image of size {(max_h, max_w)} exceeds square_size {square}")
            max_h = max_w = square
        if size_divisibility > 1:
            max_h = -(-max_h // size_divisibility) * size_divisibility
            max_w = -(-max_w // size_divisibility) * size_divisibility
        if len(tensors) == 1:
            h, w = image_sizes[0]
            padded = F.pad(tensors[0], (0, max_w - w, 0, max_h - h), value=pad_value)
            return ImageList(padded.unsqueeze(0), image_sizes)
        batch = tensors[0].new_full((len(tensors), *leading, max_h, max_w), pad_value)
        for dst, src in zip(batch, tensors):
            dst[..., : src.shape[-2], : src.shape[-1]].copy_(src)
        return ImageList(batch.contiguous(), image_sizes)
