"""Deterministic transforms: each applies one fixed geometric or photometric change.

A :class:`Transform` (fvcore's) maps

- ``apply_image``: (H, W) or (H, W, C) image, interpolated (bilinear for resizing);
- ``apply_segmentation``: (H, W) label map, nearest neighbour, padding with the ignore value;
- ``apply_mask``: (H, W) binary mask or (H, W[, 3]) panoptic id map, nearest neighbour,
  padding with 0 ("no object");
- ``apply_coords`` / ``apply_polygons`` / ``apply_box``: points in absolute pixel units.

Flips, the no-op and the transform list come from fvcore. An :class:`Augmentation`
(``augmentation.py``) samples one of these from the image.
"""

from __future__ import annotations

import cv2
import numpy as np
from fvcore.transforms.transform import (
    HFlipTransform,
    NoOpTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
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

# Binary masks and id maps move like label maps unless a transform says otherwise
# (padding is the exception: masks pad with 0, label maps with the ignore value).
Transform.register_type("mask", lambda transform, mask: transform.apply_segmentation(mask))


def _nearest_indices(out_len: int, in_len: int) -> np.ndarray:
    """Source index of each output pixel for nearest resizing (pixel centres aligned)."""
    centres = (np.arange(out_len) + 0.5) * (in_len / out_len)
    return np.minimum(np.floor(centres).astype(np.int64), in_len - 1)


class ResizeTransform(Transform):
    """Resize from (h, w) to (new_h, new_w); images bilinear, labels and masks nearest."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        if min(h, w, new_h, new_w) <= 0:
            raise ValueError(f"ResizeTransform: sizes must be positive, got {(h, w, new_h, new_w)}")
        self._set_attributes(locals())

    def _check_shape(self, array: np.ndarray) -> None:
        if array.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform built for {(self.h, self.w)} got an array of shape {array.shape}"
            )

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        self._check_shape(img)
        # uint8 goes through float32: OpenCV's 8-bit fixed point is off by one on flat regions.
        source = img.astype(np.float32) if img.dtype == np.uint8 else img
        resized = cv2.resize(source, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)
        if img.dtype == np.uint8:
            resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        if img.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
            resized = resized[:, :, None]
        return resized

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        self._check_shape(segmentation)
        rows = _nearest_indices(self.new_h, self.h)
        cols = _nearest_indices(self.new_w, self.w)
        return segmentation[rows[:, None], cols[None, :]]

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h / self.h)
        return coords

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w)


class CropTransform(Transform):
    """Keep the window of size (h, w) whose top-left corner is (x0, y0).

    A window reaching past the input keeps only the part inside it (as numpy slicing does);
    :class:`PadTransform` then fills up to a fixed size. Polygons are clipped to the window
    (so that later padding stays empty); one that falls outside it is dropped.
    """

    def __init__(self, x0: int, y0: int, w: int, h: int):
        super().__init__()
        if min(x0, y0) < 0 or min(w, h) <= 0:
            raise ValueError(f"CropTransform: bad window x0={x0} y0={y0} w={w} h={h}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def apply_polygons(self, polygons: list[np.ndarray]) -> list[np.ndarray]:
        """Shift (n, 2) polygons into the window and clip them to it."""
        clipped = [_clip_polygon(self.apply_coords(p.copy()), self.w, self.h) for p in polygons]
        return [p for p in clipped if len(p) >= 3]


def _clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Sutherland-Hodgman: the part of an (n, 2) polygon inside [0, width] x [0, height]."""
    for axis, limit, keep_below in (
        (0, 0.0, False),
        (0, width, True),
        (1, 0.0, False),
        (1, height, True),
    ):
        if len(points) == 0:
            break
        inside = points[:, axis] <= limit if keep_below else points[:, axis] >= limit
        output = []
        for i in range(len(points)):
            current, previous = points[i], points[i - 1]
            if inside[i] != inside[i - 1]:  # the edge crosses the clip line
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                output.append(previous + t * (current - previous))
            if inside[i]:
                output.append(current)
        points = np.asarray(output, dtype=np.float64).reshape(-1, 2)
    return points


class PadTransform(Transform):
    """Add ``x1`` columns on the right and ``y1`` rows at the bottom of an (h, w) input.

    Images pad with ``pad_value``, label maps with ``seg_pad_value`` (the ignore value),
    masks and id maps with 0.
    """

    def __init__(self, h: int, w: int, y1: int, x1: int, pad_value: float, seg_pad_value: int):
        super().__init__()
        if min(y1, x1) < 0:
            raise ValueError(f"PadTransform: negative padding y1={y1} x1={x1}")
        self._set_attributes(locals())

    def _pad(self, array: np.ndarray, value: float) -> np.ndarray:
        if array.shape[:2] != (self.h, self.w):
            raise ValueError(f"PadTransform built for {(self.h, self.w)} got shape {array.shape}")
        widths = [(0, self.y1), (0, self.x1)] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, widths, mode="constant", constant_values=value)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._pad(img, self.pad_value)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._pad(segmentation, self.seg_pad_value)

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        return self._pad(mask, 0)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


def _scale_and_clip(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float64) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSDTransform(Transform):
    """SSD photometric distortion of a uint8 image; labels, masks and points are unchanged.

    Each parameter is ``None`` when its step is skipped: brightness adds ``brightness_beta``,
    contrast multiplies by ``contrast_alpha``, saturation multiplies the HSV S channel by
    ``saturation_alpha``, hue adds ``hue_shift`` (OpenCV hue units, mod 180). Contrast comes
    first or last (``contrast_first``), as in SSD. The image is in ``img_format``.
    """

    def __init__(
        self,
        *,
        img_format: str,
        brightness_beta: float | None,
        contrast_alpha: float | None,
        saturation_alpha: float | None,
        hue_shift: int | None,
        contrast_first: bool,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(
                f"ColorAugSSDTransform: img_format must be RGB or BGR, not {img_format!r}"
            )
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"ColorAugSSDTransform takes (H, W, 3) uint8, got {img.dtype} {img.shape}"
            )
        bgr = img[:, :, ::-1] if self.img_format == "RGB" else img
        if self.brightness_beta is not None:
            bgr = _scale_and_clip(bgr, beta=self.brightness_beta)
        if self.contrast_first and self.contrast_alpha is not None:
            bgr = _scale_and_clip(bgr, alpha=self.contrast_alpha)
        bgr = self._saturation_and_hue(np.ascontiguousarray(bgr))
        if not self.contrast_first and self.contrast_alpha is not None:
            bgr = _scale_and_clip(bgr, alpha=self.contrast_alpha)
        return np.ascontiguousarray(bgr[:, :, ::-1] if self.img_format == "RGB" else bgr)

    def _saturation_and_hue(self, bgr: np.ndarray) -> np.ndarray:
        if self.saturation_alpha is None and self.hue_shift is None:
            return bgr
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        if self.saturation_alpha is not None:
            hsv[:, :, 1] = _scale_and_clip(hsv[:, :, 1], alpha=self.saturation_alpha)
        if self.hue_shift is not None:
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + self.hue_shift) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords
