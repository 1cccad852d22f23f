"""Augmentations: policies that sample a :class:`Transform` from the input they see."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .transform import Transform, TransformList

__all__ = ["AugInput", "Augmentation", "apply_augmentations"]


class Augmentation:
    """Samples a deterministic transform (using ``np.random``) from an image and label map.

    Subclasses implement ``get_transform(image, sem_seg)``: ``image`` is (H, W, C),
    ``sem_seg`` the (H, W) label map or None. The returned transform is then applied to the
    image, the label map and every mask of the sample, so they stay aligned.
    """

    def get_transform(self, image: np.ndarray, sem_seg: np.ndarray | None = None) -> Transform:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class AugInput:
    """An image (H, W, C) and optional label map (H, W) that augmentations transform in place."""

    def __init__(self, image: np.ndarray, *, sem_seg: np.ndarray | None = None):
        if sem_seg is not None and sem_seg.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"AugInput: label map shape {sem_seg.shape[:2]} differs from image {image.shape[:2]}"
            )
        self.image = image
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)


def apply_augmentations(
    augmentations: Sequence[Augmentation], aug_input: AugInput
) -> TransformList:
    """Apply each augmentation in turn to ``aug_input``; return the transforms it sampled.

    The returned list replays the same change on masks and polygons of the sample.
    """
    transforms = []
    for augmentation in augmentations:
        tfm = augmentation.get_transform(aug_input.image, aug_input.sem_seg)
        if not isinstance(tfm, Transform):
            raise TypeError(f"{augmentation!r}.get_transform returned {type(tfm).__name__}")
        aug_input.transform(tfm)
        transforms.append(tfm)
    return TransformList(transforms)
