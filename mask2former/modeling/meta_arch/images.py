"""Turning detectron2-format inputs into a normalised, padded batch."""

import torch

from mask2former.structures import ImageList


def normalize_and_pad(
    batched_inputs: list[dict],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> ImageList:
    """Each ``x["image"]`` (C, H, W) normalised and padded: see :func:`normalize_and_pad_images`."""
    images = [x["image"] for x in batched_inputs]
    return normalize_and_pad_images(images, pixel_mean, pixel_std, size_divisibility)


def normalize_and_pad_images(
    images: list[torch.Tensor],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> ImageList:
    """Each image (C, H, W) normalised by mean (C, 1, 1) and std, then zero-padded (i.e. with
    the mean colour) at the bottom/right to a common size divisible by ``size_divisibility``."""
    images = [(x.to(pixel_mean.device) - pixel_mean) / pixel_std for x in images]
    return ImageList.from_tensors(images, size_divisibility)
