"""The augmentations of the published Mask2Former training recipes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .augmentation import Augmentation
from .transform import (
    ColorAugSSDTransform,
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
    "ColorAugSSD",
    "FixedSizeCrop",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "ResizeScale",
    "ResizeShortestEdge",
    "shortest_edge_output_shape",
]

CROP_TYPES = ("relative", "relative_range", "absolute", "absolute_range")


def shortest_edge_output_shape(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side ``short_edge`` and the long side at most ``max_size``."""
    scale = short_edge / min(h, w)
    new_h, new_w = h * scale, w * scale
    longest = max(new_h, new_w)
    if longest > max_size:
        new_h, new_w = new_h * max_size / longest, new_w * max_size / longest
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is a sampled length and the long side at most ``max_size``.

    ``sample_style`` "choice" picks one of ``short_edge_length``; "range" draws an integer in
    ``[short_edge_length[0], short_edge_length[1]]``. A length of 0 leaves the image alone.
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = 2**31 - 1,
        sample_style: str = "range",
    ):
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"'range' sampling needs two lengths, got {short_edge_length!r}")
        self.short_edge_length = tuple(short_edge_length)
        self.max_size = max_size
        self.sample_style = sample_style

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            low, high = self.short_edge_length
            size = int(np.random.randint(low, high + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        new_h, new_w = shortest_edge_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w)


class RandomFlip(Augmentation):
    """Flip horizontally or vertically with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip: set exactly one of horizontal and vertical")
        self.prob = prob
        self.horizontal = horizontal
        self.vertical = vertical

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        h, w = image.shape[:2]
        if np.random.uniform() >= self.prob:
            return NoOpTransform()
        return HFlipTransform(w) if self.horizontal else VFlipTransform(h)


class RandomCrop(Augmentation):
    """Crop a random window whose size follows ``crop_type``.

    - "relative": (H * crop_size[0], W * crop_size[1]);
    - "relative_range": a uniform fraction in [crop_size[i], 1] of each side;
    - "absolute": crop_size pixels (each side at most the image's);
    - "absolute_range": a uniform integer size in [crop_size[0], crop_size[1]] for both sides
      (each at most the image's).
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in CROP_TYPES:
            raise ValueError(f"crop_type must be one of {CROP_TYPES}, got {crop_type!r}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def get_crop_size(self, h: int, w: int) -> tuple[int, int]:
        """(crop_h, crop_w) for an (h, w) image."""
        ch, cw = self.crop_size
        if self.crop_type == "relative":
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            fh, fw = np.random.uniform(np.asarray(self.crop_size), 1.0)
            return int(h * fh + 0.5), int(w * fw + 0.5)
        if self.crop_type == "absolute":
            return min(int(ch), h), min(int(cw), w)
        low, high = int(ch), int(cw)
        crop_h = np.random.randint(min(h, low), min(h, high) + 1)
        crop_w = np.random.randint(min(w, low), min(w, high) + 1)
        return int(crop_h), int(crop_w)

    def sample_window(self, h: int, w: int) -> CropTransform:
        crop_h, crop_w = self.get_crop_size(h, w)
        y0 = int(np.random.randint(h - crop_h + 1))
        x0 = int(np.random.randint(w - crop_w + 1))
        return CropTransform(x0, y0, crop_w, crop_h)

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        return self.sample_window(*image.shape[:2])


class RandomCrop_CategoryAreaConstraint(Augmentation):
    """A :class:`RandomCrop` in which no single category covers ``single_category_max_area`` or
    more of the labelled pixels (pixels of ``ignored_category`` do not count).

    Up to 10 windows are tried; a window qualifies when it holds at least two categories and
    the largest has under ``single_category_max_area`` of the counted pixels. If none
    qualifies, the 10th is used. With ``single_category_max_area >= 1`` any window qualifies.
    """

    NUM_TRIES = 10

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
    ):
        self.crop = RandomCrop(crop_type, crop_size)
        self.single_category_max_area = single_category_max_area
        self.ignored_category = ignored_category

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        if self.single_category_max_area >= 1.0:
            return self.crop.get_transform(image)
        if sem_seg is None:
            raise ValueError("RandomCrop_CategoryAreaConstraint needs the label map (sem_seg)")
        for _ in range(self.NUM_TRIES):
            window = self.crop.sample_window(*sem_seg.shape[:2])
            if self._qualifies(window.apply_segmentation(sem_seg)):
                break
        return window

    def _qualifies(self, labels: np.ndarray) -> bool:
        values, counts = np.unique(labels, return_counts=True)
        if self.ignored_category is not None:
            counts = counts[values != self.ignored_category]
        return len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area


class ColorAugSSD(Augmentation):
    """Sample the SSD photometric distortion: each step happens with probability 1/2.

    Brightness adds U(-brightness_delta, brightness_delta); contrast and saturation multiply
    by U(low, high); hue adds an integer in [-hue_delta, hue_delta].
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
        self.img_format = img_format
        self.brightness_delta = brightness_delta
        self.contrast_range = (contrast_low, contrast_high)
        self.saturation_range = (saturation_low, saturation_high)
        self.hue_delta = hue_delta

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        def maybe(draw):
            return draw() if np.random.randint(2) else None

        delta = self.brightness_delta
        return ColorAugSSDTransform(
            img_format=self.img_format,
            brightness_beta=maybe(lambda: float(np.random.uniform(-delta, delta))),
            contrast_alpha=maybe(lambda: float(np.random.uniform(*self.contrast_range))),
            saturation_alpha=maybe(lambda: float(np.random.uniform(*self.saturation_range))),
            hue_shift=maybe(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta + 1))),
            contrast_first=bool(np.random.randint(2)),
        )


class ResizeScale(Augmentation):
    """Large-scale jitter, step 1: fit the image into (target_height, target_width) times a
    scale drawn from U(min_scale, max_scale), keeping its aspect ratio."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int):
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.target_height = target_height
        self.target_width = target_width

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        h, w = image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        output_scale = min(self.target_height * scale / h, self.target_width * scale / w)
        new_h, new_w = max(round(h * output_scale), 1), max(round(w * output_scale), 1)
        return ResizeTransform(h, w, new_h, new_w)


class FixedSizeCrop(Augmentation):
    """Large-scale jitter, step 2: crop a random window of ``crop_size`` (H, W) where the image
    is larger, then pad at the right and bottom where it is smaller.

    Padding: ``pad_value`` (128) in the image, ``seg_pad_value`` (the ignore value) in label
    maps, 0 in masks.
    """

    def __init__(
        self, crop_size: tuple[int, int], pad_value: float = 128.0, seg_pad_value: int = 255
    ):
        self.crop_size = tuple(crop_size)
        self.pad_value = pad_value
        self.seg_pad_value = seg_pad_value

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        h, w = image.shape[:2]
        out_h, out_w = self.crop_size
        max_y, max_x = max(h - out_h, 0), max(w - out_w, 0)
        # One uniform draw positions the window along both axes.
        fraction = np.random.uniform(0.0, 1.0)
        y0, x0 = round(max_y * fraction), round(max_x * fraction)
        crop_h, crop_w = min(h, out_h), min(w, out_w)
        crop = CropTransform(x0, y0, crop_w, crop_h)
        pad = PadTransform(
            crop_h, crop_w, out_h - crop_h, out_w - crop_w, self.pad_value, self.seg_pad_value
        )
        return TransformList([crop, pad])
