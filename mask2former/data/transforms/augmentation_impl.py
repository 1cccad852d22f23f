"""The augmentations of the published recipes, with detectron2's sampling and size rounding.

Each draws from NumPy's global generator in the same order and with the same calls as
detectron2, so a seeded run samples the same transforms.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .augmentation import Augmentation, as_augmentation
from .transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "FixedSizeCrop",
    "RandomApply",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
]

CROP_TYPES = ("relative", "relative_range", "absolute", "absolute_range")


class RandomApply(Augmentation):
    """Apply ``tfm_or_aug`` with probability ``prob``, else nothing."""

    def __init__(self, tfm_or_aug: Transform | Augmentation, prob: float = 0.5):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApply: prob must be in [0, 1], got {prob}")
        self.aug = as_augmentation(tfm_or_aug)
        self.prob = prob

    def get_transform(self, *args) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug.get_transform(*args)
        return NoOpTransform()

    def __call__(self, aug_input) -> Transform:
        if self._rand_range() < self.prob:
            return self.aug(aug_input)
        return NoOpTransform()


class RandomFlip(Augmentation):
    """Flip horizontally (or vertically) with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        super().__init__()
        if horizontal and vertical:
            raise ValueError("RandomFlip: flip one way only; use two RandomFlips for both")
        if not horizontal and not vertical:
            raise ValueError("RandomFlip: set horizontal or vertical")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class Resize(Augmentation):
    """Resize to a fixed ``shape`` (h, w), or a square of side ``shape``."""

    def __init__(self, shape: int | Sequence[int], interp: int = Image.BILINEAR):
        if isinstance(shape, int):
            shape = (shape, shape)
        shape = tuple(shape)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return ResizeTransform(h, w, self.shape[0], self.shape[1], self.interp)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is a sampled length and the long side at most ``max_size``.

    ``sample_style`` "choice" picks one of ``short_edge_length``; "range" draws an integer in
    ``[short_edge_length[0], short_edge_length[1]]``. A length of 0 leaves the image alone.
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        self.is_range = sample_style == "range"
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(
                f"'range' sampling takes (min, max) short edge lengths, got {short_edge_length!r}"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            low, high = self.short_edge_length
            size = np.random.randint(low, high + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        new_h, new_w = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(h: int, w: int, short_edge_length: int, max_size: int) -> tuple[int, int]:
        """(new_h, new_w): short side ``short_edge_length``, long side at most ``max_size``,
        each rounded half up (detectron2's arithmetic, operation for operation)."""
        size = short_edge_length * 1.0
        scale = size / min(h, w)
        new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
        if max(new_h, new_w) > max_size:
            scale = max_size * 1.0 / max(new_h, new_w)
            new_h, new_w = new_h * scale, new_w * scale
        return int(new_h + 0.5), int(new_w + 0.5)


class ResizeScale(Augmentation):
    """Large-scale jitter, step 1: fit the image into (target_height, target_width) times a
    scale drawn from U(min_scale, max_scale), keeping its aspect ratio (sizes rounded half to
    even)."""

    def __init__(
        self,
        min_scale: float,
        max_scale: float,
        target_height: int,
        target_width: int,
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        self._init(locals())

    def _get_resize(self, image: np.ndarray, scale: float) -> Transform:
        h, w = image.shape[:2]
        target_h, target_w = np.multiply((self.target_height, self.target_width), scale)
        output_scale = np.minimum(target_h / h, target_w / w)
        new_h, new_w = np.round(np.multiply((h, w), output_scale)).astype(int)
        return ResizeTransform(h, w, int(new_h), int(new_w), self.interp)

    def get_transform(self, image: np.ndarray) -> Transform:
        return self._get_resize(image, np.random.uniform(self.min_scale, self.max_scale))


class FixedSizeCrop(Augmentation):
    """Large-scale jitter, step 2: a random ``crop_size`` (h, w) window where the image is
    larger, then (``pad``) padding at the right and bottom where it is smaller.

    One uniform draw places the window along both axes (offsets rounded half to even).
    Padding: ``pad_value`` in the image, ``seg_pad_value`` in label maps and anything else
    moved with ``apply_segmentation``.
    """

    def __init__(
        self,
        crop_size: Sequence[int],
        pad: bool = True,
        pad_value: float = 128.0,
        seg_pad_value: int = 255,
    ):
        super().__init__()
        self._init(locals())

    def _get_crop(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        max_offset = np.maximum(np.subtract(input_size, self.crop_size), 0)
        offset = np.round(np.multiply(max_offset, np.random.uniform(0.0, 1.0))).astype(int)
        out_h, out_w = self.crop_size
        return CropTransform(
            int(offset[1]), int(offset[0]), out_w, out_h, input_size[1], input_size[0]
        )

    def _get_pad(self, image: np.ndarray) -> Transform:
        input_size = image.shape[:2]
        pad_h, pad_w = np.maximum(np.subtract(self.crop_size, input_size), 0)
        kept_h, kept_w = np.minimum(input_size, self.crop_size)
        return PadTransform(
            0,
            0,
            int(pad_w),
            int(pad_h),
            int(kept_w),
            int(kept_h),
            self.pad_value,
            self.seg_pad_value,
        )

    def get_transform(self, image: np.ndarray) -> TransformList:
        transforms = [self._get_crop(image)]
        if self.pad:
            transforms.append(self._get_pad(image))
        return TransformList(transforms)


class RandomCrop(Augmentation):
    """Crop a random window whose size follows ``crop_type``.

    - "relative": (H * crop_size[0], W * crop_size[1]), rounded half up;
    - "relative_range": fractions drawn uniformly from [crop_size[i], 1] (crop_size taken
      as float32, as detectron2 does);
    - "absolute": crop_size pixels, each side at most the image's;
    - "absolute_range": integer sides drawn uniformly from
      [min(side, crop_size[0]), min(side, crop_size[1])].
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        super().__init__()
        if crop_type not in CROP_TYPES:
            raise ValueError(f"crop_type must be one of {CROP_TYPES}, got {crop_type!r}")
        if crop_type == "absolute_range" and crop_size[0] > crop_size[1]:
            raise ValueError(f"'absolute_range' crop needs min <= max, got {crop_size!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        crop_h, crop_w = self.get_crop_size((h, w))
        y0 = np.random.randint(h - crop_h + 1)
        x0 = np.random.randint(w - crop_w + 1)
        return CropTransform(x0, y0, crop_w, crop_h)

    def get_crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(crop_h, crop_w) in pixels for an image of ``image_size`` (h, w)."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            low = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = low + np.random.rand(2) * (1 - low)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(self.crop_size[0], h), min(self.crop_size[1], w)
        low, high = self.crop_size
        crop_h = np.random.randint(min(h, low), min(h, high) + 1)
        crop_w = np.random.randint(min(w, low), min(w, high) + 1)
        return crop_h, crop_w


class RandomCrop_CategoryAreaConstraint(Augmentation):
    """A :class:`RandomCrop` in which no single category covers ``single_category_max_area``
    or more of the counted pixels (those not of ``ignored_category``).

    Up to 10 windows are tried; one qualifies when it holds at least two counted categories
    and the largest has under ``single_category_max_area`` of the counted pixels; if none
    does, the 10th is used. ``single_category_max_area >= 1`` crops as :class:`RandomCrop`.
    """

    NUM_TRIES = 10

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
    ):
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self._init(locals())

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        if sem_seg is None:
            raise ValueError(
                "RandomCrop_CategoryAreaConstraint with single_category_max_area < 1 needs the "
                "label map (sem_seg) of the sample"
            )
        h, w = sem_seg.shape
        for _ in range(self.NUM_TRIES):
            crop_h, crop_w = self.crop_aug.get_crop_size((h, w))
            y0 = np.random.randint(h - crop_h + 1)
            x0 = np.random.randint(w - crop_w + 1)
            if self._qualifies(sem_seg[y0 : y0 + crop_h, x0 : x0 + crop_w]):
                break
        return CropTransform(x0, y0, crop_w, crop_h)

    def _qualifies(self, labels: np.ndarray) -> bool:
        values, counts = np.unique(labels, return_counts=True)
        if self.ignored_category is not None:
            counts = counts[values != self.ignored_category]
        return len(counts) > 1 and np.max(counts) < np.sum(counts) * self.single_category_max_area
