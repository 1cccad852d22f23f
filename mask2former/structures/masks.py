"""Per-instance masks: binary (:class:`BitMasks`) or polygons (:class:`PolygonMasks`)."""

from __future__ import annotations

from typing import Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from .boxes import Boxes


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of (N, H, W) masks (bool or 0/1): (N, 4) float32 XYXY on the masks'
    device, detectron2's convention: x1, y1 one past the last pixel (a one-pixel mask at
    (x, y) gives (x, y, x + 1, y + 1)); an empty mask gives zeros.

    On a GPU this is ``torchvision.ops.masks_to_boxes`` with the max side moved by one. On
    the CPU the same reductions run in numpy: torchvision's ``any`` over bool masks, and
    torch's threaded reductions on a busy CPU, take 10 to 25 times longer for the 100
    image-sized masks that instance post-processing boxes per image.
    """
    n, height, width = masks.shape
    if masks.numel() == 0:
        return torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    if masks.device.type != "cpu":
        return _masks_to_boxes_torchvision(masks)
    occupied = (masks if masks.dtype == torch.bool else masks != 0).numpy()
    rows, cols = occupied.any(axis=2), occupied.any(axis=1)  # (N, H), (N, W)
    # argmax gives the first True: the first occupied row / column from each end
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1, y1 = width - cols[:, ::-1].argmax(axis=1), height - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1) * rows.any(axis=1, keepdims=True)
    return torch.from_numpy(boxes.astype(np.float32))


def _masks_to_boxes_torchvision(masks: torch.Tensor) -> torch.Tensor:
    """:func:`masks_to_boxes` by ``torchvision.ops.masks_to_boxes`` (x1, y1 on the last pixel)."""
    import torchvision  # here: importing it costs ~150 MB of memory (torch._dynamo)

    boxes = torchvision.ops.masks_to_boxes(masks)
    # Only an empty mask and one holding just pixel (0, 0) get (0, 0, 0, 0); that pixel tells.
    empty = (boxes == 0).all(dim=1) & (masks[:, 0, 0] == 0)
    boxes[:, 2:] += (~empty)[:, None]
    return boxes


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
        """Tight XYXY boxes (zeros for empty masks): see :func:`masks_to_boxes`."""
        return Boxes(masks_to_boxes(self.tensor))

    @staticmethod
    def cat(masks_list: list["BitMasks"]) -> "BitMasks":
        return BitMasks(torch.cat([m.tensor for m in masks_list], dim=0))


def polygons_to_bitmask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """The union of flat ``[x0, y0, x1, y1, ...]`` polygons rasterised by COCO's rules:
    (height, width) bool."""
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _as_flat_polygon(polygon: Union[np.ndarray, list, torch.Tensor]) -> np.ndarray:
    if isinstance(polygon, torch.Tensor):
        polygon = polygon.cpu().numpy()
    flat = np.asarray(polygon, dtype=np.float64).reshape(-1)
    if len(flat) % 2 or len(flat) < 6:
        raise ValueError(f"a polygon needs at least 3 (x, y) points, got {len(flat)} numbers")
    return flat


class PolygonMasks:
    """Instance masks as polygons: for each instance, a list of flat float64
    ``[x0, y0, x1, y1, ...]`` arrays whose union is the mask (COCO's polygon format)."""

    def __init__(self, polygons: list[list[Union[np.ndarray, list, torch.Tensor]]]):
        if not isinstance(polygons, list):
            raise TypeError(f"PolygonMasks takes a list of lists of polygons, got {type(polygons)}")
        for instance in polygons:
            if not isinstance(instance, list):
                raise TypeError(
                    f"PolygonMasks: each instance is a list of polygons, got {type(instance)}"
                )
        self.polygons = [[_as_flat_polygon(p) for p in instance] for instance in polygons]

    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, item: Union[int, slice, list, torch.Tensor]) -> "PolygonMasks":
        if isinstance(item, int):
            return PolygonMasks([self.polygons[item]])
        if isinstance(item, slice):
            return PolygonMasks(self.polygons[item])
        if isinstance(item, torch.Tensor):
            item = (item.nonzero().flatten() if item.dtype == torch.bool else item).tolist()
        return PolygonMasks([self.polygons[i] for i in item])

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self)})"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> "PolygonMasks":
        return self

    def nonempty(self) -> torch.Tensor:
        """(N,) bool: instances with at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def get_bounding_boxes(self) -> Boxes:
        """XYXY boxes of the polygons' vertices, in float32 (an instance without polygons
        gets (inf, inf, 0, 0), which no box test passes)."""
        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        for i, instance in enumerate(self.polygons):
            low = torch.full((2,), float("inf"))
            high = torch.zeros(2)
            for polygon in instance:
                points = torch.from_numpy(polygon).view(-1, 2).float()
                low = torch.minimum(low, points.min(dim=0).values)
                high = torch.maximum(high, points.max(dim=0).values)
            boxes[i, :2], boxes[i, 2:] = low, high
        return Boxes(boxes)

    def to_bitmasks(self, height: int, width: int) -> torch.Tensor:
        """(N, height, width) bool rasterisation of every instance."""
        if not self.polygons:
            return torch.zeros((0, height, width), dtype=torch.bool)
        masks = [polygons_to_bitmask(p, height, width) for p in self.polygons]
        return torch.from_numpy(np.stack(masks))
