"""Deterministic transforms, with detectron2's exact semantics.

A :class:`Transform` (fvcore's) maps

- ``apply_image``: an (H, W) or (H, W, C) image;
- ``apply_segmentation``: an (H, W) label map, or any array that must not be interpolated
  (panoptic colour maps, binary masks): nearest neighbour, padding with ``seg_pad_value``;
- ``apply_coords`` / ``apply_box`` / ``apply_polygons``: points in absolute pixel units.

Crop, pad, flips, the no-op and the transform list are fvcore's own classes, as in
detectron2. :class:`ResizeTransform` resizes as detectron2 does: uint8 arrays with PIL
(bilinear by default, which antialiases when it shrinks; one-channel arrays as mode "L"),
every other dtype with ``torch.nn.functional.interpolate`` in the matching mode
(``align_corners=False``). An :class:`~.augmentation.Augmentation` samples one of these.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

__all__ = [
    "BlendTransform",
    "ColorAugSSDTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "ResizeTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
]

# PIL resampling filter -> the F.interpolate mode used for arrays PIL cannot hold.
_INTERPOLATE_MODES = {
    Image.NEAREST: "nearest",
    Image.BILINEAR: "bilinear",
    Image.BICUBIC: "bicubic",
}


def _resize_uint8(img: np.ndarray, size_wh: tuple[int, int], resample: int) -> np.ndarray:
    """(H, W) / (H, W, C) uint8 resized by PIL; a single channel goes through mode "L"."""
    single_channel = img.ndim == 3 and img.shape[2] == 1
    pil_image = Image.fromarray(img[:, :, 0] if single_channel else img)
    resized = np.asarray(pil_image.resize(size_wh, resample))
    return resized[:, :, None] if single_channel else resized


def _resize_tensor(img: np.ndarray, size_hw: tuple[int, int], resample: int) -> np.ndarray:
    """Any non-uint8 (H, W) / (H, W, C) array resized by ``F.interpolate``, dtype kept."""
    if resample not in _INTERPOLATE_MODES:
        raise ValueError(f"ResizeTransform: no interpolate mode for PIL filter {resample}")
    mode = _INTERPOLATE_MODES[resample]
    shape = list(img.shape)
    # (H, W[, C]) -> (1, C, H, W): channels become the batch's channel axis.
    tensor = torch.from_numpy(np.ascontiguousarray(img)).reshape(shape[:2] + [1, -1])
    tensor = tensor.permute(2, 3, 0, 1)
    align_corners = None if mode == "nearest" else False
    tensor = F.interpolate(tensor, size_hw, mode=mode, align_corners=align_corners)
    return tensor.permute(2, 3, 0, 1).reshape(list(size_hw) + shape[2:]).numpy()


class ResizeTransform(Transform):
    """Resize from (h, w) to (new_h, new_w) with a PIL filter (``interp``, bilinear by default).

    Label maps (``apply_segmentation``) use nearest neighbour: PIL's for uint8 (and bool)
    arrays, torch's ``"nearest"`` (source index ``floor(i * in / out)``) for any other dtype
    (integers through float64, which detectron2 does not accept).
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int | None = None):
        super().__init__()
        if min(h, w, new_h, new_w) <= 0:
            raise ValueError(f"ResizeTransform: sizes must be positive, got {(h, w, new_h, new_w)}")
        if interp is None:
            interp = Image.BILINEAR
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform built for {(self.h, self.w)} got an array of shape {img.shape}"
            )
        if img.ndim > 3:
            raise ValueError(f"ResizeTransform takes (H, W) or (H, W, C), got shape {img.shape}")
        resample = self.interp if interp is None else interp
        if img.dtype == np.uint8:
            return _resize_uint8(img, (self.new_w, self.new_h), resample)
        if img.dtype == bool and resample == Image.NEAREST:  # a binary mask, as uint8
            return _resize_uint8(img.astype(np.uint8), (self.new_w, self.new_h), resample) > 0
        if np.issubdtype(img.dtype, np.integer) and resample == Image.NEAREST:
            # torch has no integer nearest resize: float64 holds labels below 2**53 exactly
            resized = _resize_tensor(img.astype(np.float64), (self.new_h, self.new_w), resample)
            return resized.astype(img.dtype)
        if not np.issubdtype(img.dtype, np.floating):
            raise TypeError(
                f"ResizeTransform: {img.dtype} arrays resize only with NEAREST; use uint8 or float"
            )
        return _resize_tensor(img, (self.new_h, self.new_w), resample)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


def _scale_and_clip(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``clip(img * alpha + beta, 0, 255)`` in float32, truncated to uint8 (SSD's convert)."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSDTransform(Transform):
    """SSD's photometric distortion of an (H, W, 3) uint8 image, as detectron2's PointRend
    project defines it; label maps, masks and points are unchanged.

    Unlike other transforms it draws its parameters when applied, from Python's ``random``
    module (seeded by ``seed_all_rng`` and in every loader worker): brightness, then contrast
    either first or last around saturation and hue, each step with probability 1/2.
    Brightness adds U(-brightness_delta, brightness_delta); contrast and saturation (HSV S)
    multiply by U(low, high); hue adds an integer in [-hue_delta, hue_delta] (OpenCV hue
    units, mod 180). The image is in ``img_format`` ("RGB" or "BGR") order.
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: int = 32,
        contrast_low: float = 0.5,
        contrast_high: float = 1.5,
        saturation_low: float = 0.5,
        saturation_high: float = 1.5,
        hue_delta: int = 18,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(
                f"ColorAugSSDTransform: img_format must be RGB or BGR, not {img_format!r}"
            )
        self.is_rgb = img_format == "RGB"
        del img_format
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"ColorAugSSDTransform takes (H, W, 3) uint8, got {img.dtype} {img.shape}"
            )
        if self.is_rgb:
            img = img[:, :, [2, 1, 0]]
        img = self.brightness(img)
        if random.randrange(2):
            img = self.hue(self.saturation(self.contrast(img)))
        else:
            img = self.contrast(self.hue(self.saturation(img)))
        if self.is_rgb:
            img = img[:, :, [2, 1, 0]]
        return img

    def brightness(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            delta = self.brightness_delta
            return _scale_and_clip(img, beta=random.uniform(-delta, delta))
        return img

    def contrast(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            return _scale_and_clip(img, alpha=random.uniform(self.contrast_low, self.contrast_high))
        return img

    def saturation(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            alpha = random.uniform(self.saturation_low, self.saturation_high)
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = _scale_and_clip(hsv[:, :, 1], alpha=alpha)
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def hue(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            shift = random.randint(-self.hue_delta, self.hue_delta)
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + shift) % 180
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords
