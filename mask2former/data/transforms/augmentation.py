"""Augmentations: policies that sample a :class:`Transform` from the data they are given.

The protocol is detectron2's. An :class:`Augmentation` names the inputs it needs by the
parameter names of its ``get_transform`` (``image``, ``sem_seg``, ``boxes``, or anything the
:class:`AugInput` in use holds); calling it on an :class:`AugInput` samples a transform,
applies it to the input in place and returns it, so the same change can be replayed on
masks, polygons and other data of the sample::

    aug_input = AugInput(image, sem_seg=labels)
    transforms = AugmentationList([ResizeShortestEdge(800, 1333), RandomFlip()])(aug_input)
    image, labels = aug_input.image, aug_input.sem_seg
    pan_seg = transforms.apply_segmentation(pan_seg)
"""

from __future__ import annotations

import inspect
import pprint
from collections.abc import Sequence
from typing import Any

import numpy as np

from .transform import Transform, TransformList

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "StandardAugInput",
    "TransformGen",
    "apply_augmentations",
    "apply_transform_gens",
]


def _input_arg_names(aug: Augmentation) -> tuple[str, ...]:
    """The attributes of the input that ``aug.get_transform`` takes, by parameter name."""
    params = list(inspect.signature(aug.get_transform).parameters.values())
    if len(params) == 1:
        return ("image",)
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"{type(aug).__name__}.get_transform takes *args / **kwargs, so the inputs it "
                "needs are unknown: set its input_args or override __call__"
            )
    return tuple(param.name for param in params)


class Augmentation:
    """A (usually random) policy that returns a deterministic :class:`Transform`.

    Subclasses implement ``get_transform`` with parameters named after the inputs they
    read, e.g. ``get_transform(self, image)`` or ``get_transform(self, image, sem_seg)``:
    ``image`` is (H, W) or (H, W, C), uint8 or floating point; ``sem_seg`` (H, W) labels;
    ``boxes`` (N, 4) XYXY in absolute pixels. Random draws use NumPy's global generator.
    """

    input_args: tuple[str, ...] | None = None  # attributes of the input get_transform takes

    def _init(self, params: dict[str, Any] | None = None) -> None:
        """Store constructor arguments (``locals()``) as attributes, as detectron2's do."""
        for name, value in (params or {}).items():
            if name != "self" and not name.startswith("_"):
                setattr(self, name, value)

    def get_transform(self, *args) -> Transform:
        raise NotImplementedError

    def __call__(self, aug_input: Any) -> Transform:
        """Sample a transform from ``aug_input``, apply it in place, return it."""
        if self.input_args is None:
            self.input_args = _input_arg_names(self)
        args = []
        for name in self.input_args:
            if not hasattr(aug_input, name):
                raise AttributeError(
                    f"{type(self).__name__}.get_transform needs the input attribute {name!r}, "
                    f"which {type(aug_input).__name__} does not have"
                )
            args.append(getattr(aug_input, name))
        tfm = self.get_transform(*args)
        if not isinstance(tfm, Transform):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got "
                f"{type(tfm).__name__}"
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(self, low: float = 1.0, high: float | None = None, size=None) -> np.ndarray:
        """A uniform draw in [low, high), or in [0, low) when ``high`` is None."""
        if high is None:
            low, high = 0, low
        return np.random.uniform(low, high, [] if size is None else size)

    def __repr__(self) -> str:
        """``Name(arg=value, ...)`` for the constructor arguments that differ from defaults."""
        try:
            params = inspect.signature(self.__init__).parameters.values()
        except (TypeError, ValueError):
            return super().__repr__()
        shown = []
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(
                self, param.name
            ):
                return super().__repr__()
            value = getattr(self, param.name)
            if value is param.default:
                continue
            text = pprint.pformat(value)
            shown.append(f"{param.name}={'...' if chr(10) in text else text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__


TransformGen = Augmentation  # detectron2's former name


class _TransformToAug(Augmentation):
    """A fixed :class:`Transform` used where an augmentation is expected."""

    def __init__(self, tfm: Transform):
        self.tfm = tfm

    def get_transform(self, *args) -> Transform:
        return self.tfm

    def __call__(self, aug_input: Any) -> Transform:
        aug_input.transform(self.tfm)
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)

    __str__ = __repr__


def as_augmentation(tfm_or_aug: Transform | Augmentation) -> Augmentation:
    """An augmentation as is; a transform wrapped as one that always returns it."""
    if isinstance(tfm_or_aug, Augmentation):
        return tfm_or_aug
    if isinstance(tfm_or_aug, Transform):
        return _TransformToAug(tfm_or_aug)
    raise TypeError(f"expected an Augmentation or a Transform, got {type(tfm_or_aug).__name__}")


class AugmentationList(Augmentation):
    """Apply augmentations (or fixed transforms) in order; each sees the previous one's output."""

    def __init__(self, augs: Sequence[Transform | Augmentation]):
        super().__init__()
        self.augs = [as_augmentation(aug) for aug in augs]

    def __call__(self, aug_input: Any) -> TransformList:
        return TransformList([aug(aug_input) for aug in self.augs])

    def get_transform(self, *args) -> Transform:
        raise NotImplementedError(
            "AugmentationList has no get_transform: each augmentation needs the previous one's "
            "output; call the list on an AugInput instead"
        )

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(str(aug) for aug in self.augs)}]"

    __str__ = __repr__


class AugInput:
    """An image with optional boxes and label map, transformed in place by augmentations.

    ``image``: (H, W) or (H, W, C), uint8 or floating point; ``boxes``: (N, 4) XYXY in
    absolute pixels; ``sem_seg``: (H, W) label map.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        sem_seg: np.ndarray | None = None,
    ):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"AugInput takes a numpy image, got {type(image).__name__}")
        if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
            raise TypeError(f"AugInput: images are uint8 or floating point, got {image.dtype}")
        if image.ndim not in (2, 3):
            raise ValueError(f"AugInput: image must be (H, W) or (H, W, C), got {image.shape}")
        if sem_seg is not None and sem_seg.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"AugInput: label map shape {sem_seg.shape[:2]} differs from image {image.shape[:2]}"
            )
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Apply ``tfm`` to every attribute present."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(
        self, augmentations: Sequence[Transform | Augmentation]
    ) -> TransformList:
        """``AugmentationList(augmentations)(self)``."""
        return AugmentationList(augmentations)(self)


StandardAugInput = AugInput  # detectron2's former name


def apply_augmentations(
    augmentations: Sequence[Transform | Augmentation], inputs: np.ndarray | AugInput
) -> tuple[np.ndarray | AugInput, TransformList]:
    """Apply ``augmentations`` to an image or an :class:`AugInput`.

    Returns ``(image, transforms)`` for an image, ``(aug_input, transforms)`` otherwise (the
    input transformed in place).
    """
    if isinstance(inputs, np.ndarray):
        aug_input = AugInput(inputs)
        transforms = aug_input.apply_augmentations(augmentations)
        return aug_input.image, transforms
    return inputs, inputs.apply_augmentations(augmentations)


apply_transform_gens = apply_augmentations  # detectron2's former name
