"""Augmenting the frames of a video clip: per-clip or per-frame random draws.

A video mapper applies one list of augmentations to every frame of a clip. An augmentation
wrapped in :class:`ByClip` makes the same random draws for every frame (the published
"choice_by_clip" resize and "flip_by_clip" flip: one size and one flip decision per clip);
any other makes new draws for each frame (the published "choice" / "horizontal"). A
``ByClip`` augmentation still computes its transform from the frame it is given, so a clip
whose frames differ in size (after a per-frame crop) is resized to the same short side.

The draws are made the same by running a ``ByClip`` augmentation under NumPy's global
generator seeded from one per-clip seed (drawn from the generator, so the whole clip stays
reproducible under ``np.random.seed``), and restoring the generator after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .augmentation import AugInput, Augmentation, as_augmentation
from .transform import Transform, TransformList

__all__ = ["ByClip", "apply_augmentations_to_clip"]


class ByClip(Augmentation):
    """``augmentation`` with one random draw per clip in :func:`apply_augmentations_to_clip`
    (on a single image it is ``augmentation`` itself)."""

    def __init__(self, augmentation: Augmentation):
        self.augmentation = as_augmentation(augmentation)

    def __call__(self, aug_input: Any) -> Transform:
        return self.augmentation(aug_input)

    def __repr__(self) -> str:
        return f"ByClip({self.augmentation!r})"

    __str__ = __repr__


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """NumPy's global generator seeded with ``seed`` inside the block, restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def apply_augmentations_to_clip(
    augmentations: Sequence[Augmentation | Transform], frames: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[TransformList]]:
    """Augment each of ``frames`` ((H, W, C) arrays) with ``augmentations`` in order.

    Returns the augmented frames and, per frame, the transforms applied (to replay on that
    frame's annotations). :class:`ByClip` augmentations draw once per call (one clip).
    """
    augmentations = [as_augmentation(aug) for aug in augmentations]
    # one seed per clip-level augmentation, drawn before any frame
    seeds = {
        k: int(np.random.randint(2**31))
        for k, aug in enumerate(augmentations)
        if isinstance(aug, ByClip)
    }
    images, transforms = [], []
    for frame in frames:
        aug_input = AugInput(frame)
        applied = []
        for k, aug in enumerate(augmentations):
            if k in seeds:
                with _numpy_seeded(seeds[k]):
                    applied.append(aug(aug_input))
            else:
                applied.append(aug(aug_input))
        images.append(aug_input.image)
        transforms.append(TransformList(applied))
    return images, transforms
