"""Draw semantic, panoptic and instance predictions over an image with OpenCV.

detectron2's API: ``Visualizer(img_rgb, metadata, scale, instance_mode)`` whose ``draw_*``
methods return a :class:`VisImage` (``get_image()``, ``save(path)``), and :class:`ColorMode`.

Segments are filled with their class colour from the dataset metadata (``stuff_colors`` for
stuff, ``thing_colors`` for things; a deterministic colour when the metadata has none),
outlined, and labelled with the class name at the segment's most interior pixel.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

_TEXT_FONT = cv2.FONT_HERSHEY_SIMPLEX


def fallback_color(index: int) -> tuple[int, int, int]:
    """A deterministic, well-spread RGB colour for classes the metadata gives none."""
    rng = np.random.default_rng(index + 1)
    return tuple(int(c) for c in rng.integers(40, 256, size=3))


def class_color(metadata: Any, category_id: int, isthing: bool) -> tuple[int, int, int]:
    """RGB colour of a class: ``thing_colors[id]`` for things, ``stuff_colors[id]`` for stuff.

    This indexing holds for both detectron2's split lists and Mask2Former's full lists.
    """
    colors = _meta_list(metadata, "thing_colors" if isthing else "stuff_colors")
    if colors is not None and 0 <= category_id < len(colors):
        return tuple(int(c) for c in colors[category_id])
    return fallback_color(category_id)


def class_name(metadata: Any, category_id: int, isthing: bool) -> str:
    names = _meta_list(metadata, "thing_classes" if isthing else "stuff_classes")
    if names is not None and 0 <= category_id < len(names):
        return str(names[category_id])
    return f"class {category_id}"


def _meta_value(metadata: Any, key: str) -> Any:
    if metadata is None:
        return None
    if hasattr(metadata, "get"):
        return metadata.get(key, None)
    return getattr(metadata, key, None)


def _meta_list(metadata: Any, key: str) -> Optional[Sequence]:
    return _meta_value(metadata, key)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_rgb(path: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB image (format from the extension); an error names the path and
    the reason when OpenCV cannot."""
    if not cv2.haveImageWriter(path):
        raise ValueError(f"cannot write image {path!r}: OpenCV has no image format for its name")
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write image {path!r}: no directory {parent!r}")
    if not cv2.imwrite(path, np.ascontiguousarray(image[:, :, ::-1])):
        raise OSError(f"could not write image {path!r} (OpenCV's imwrite failed)")


class ColorMode(Enum):
    """How instances and panoptic segments are drawn (detectron2's ``ColorMode``).

    IMAGE and SEGMENTATION both fill every segment with its class colour from the metadata
    (detectron2 jitters instance colours in IMAGE mode; here a class keeps one colour, so
    drawings of video frames stay consistent). IMAGE_BW also turns the image grey outside
    the predicted instances / panoptic segments.
    """

    IMAGE = 0
    SEGMENTATION = 1
    IMAGE_BW = 2


class VisImage:
    """A drawing over an RGB image (detectron2's ``VisImage``).

    ``get_image()`` returns it as an (H * scale, W * scale, 3) uint8 RGB array, labels on
    top; ``save(path)`` writes that to an image file (format from the extension).
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        self.img = img
        self.scale = scale
        self.canvas = img.copy()
        self.labels: list[tuple[str, tuple[int, int], tuple[int, int, int]]] = []

    @property
    def height(self) -> int:
        return self.img.shape[0]

    @property
    def width(self) -> int:
        return self.img.shape[1]

    def reset_image(self, img: np.ndarray) -> None:
        """Replace the drawing's background (drawn segments and labels are kept)."""
        self.canvas = np.asarray(img, dtype=np.uint8).copy()

    def get_image(self) -> np.ndarray:
        out = self.canvas.copy()
        for text, (x, y), color in self.labels:
            _put_label(out, text, x, y, color)
        if self.scale != 1.0:
            size = (round(self.width * self.scale), round(self.height * self.scale))
            out = cv2.resize(out, size, interpolation=cv2.INTER_LINEAR)
        return out

    def save(self, filepath: str) -> None:
        """Write the drawing; an error names the path when OpenCV cannot write it."""
        write_rgb(filepath, self.get_image())


class Visualizer:
    """Draws predictions over an RGB image, with detectron2's ``Visualizer`` API.

    Args:
        img_rgb: (H, W, 3) RGB image; values are clipped to 0..255 and made uint8.
        metadata: dataset metadata (class names and colours), or None.
        scale: size factor of the output image.
        instance_mode: a :class:`ColorMode`.

    Every ``draw_*`` method draws on ``self.output`` (a :class:`VisImage`) and returns it,
    so several calls accumulate (e.g. semantic map, then instances).
    """

    def __init__(
        self,
        img_rgb: np.ndarray,
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ):
        img_rgb = np.asarray(img_rgb)
        if img_rgb.ndim != 3 or img_rgb.shape[2] != 3:
            raise ValueError(f"Visualizer expects an (H, W, 3) RGB image, got {img_rgb.shape}")
        if img_rgb.dtype != np.uint8:
            img_rgb = np.clip(img_rgb, 0, 255).astype(np.uint8)
        self.img = img_rgb
        self.metadata = metadata
        self.output = VisImage(img_rgb, scale=scale)
        self._instance_mode = ColorMode(instance_mode)

    def draw_mask(
        self, mask: np.ndarray, color: tuple[int, int, int], label: str = "", alpha: float = 0.5
    ) -> None:
        """Blend ``color`` into ``mask`` ((H, W) bool), outline it, and queue its label.

        The work stays inside the mask's bounding box, in bands of rows: no full-size float
        copy of the image, whatever the mask's size.
        """
        mask = np.asarray(mask).astype(bool, copy=False)
        box = _bounding_box(mask)
        if box is None:
            return
        canvas = self.output.canvas
        _blend(canvas[box], mask[box], color, alpha)
        top, left = box[0].start, box[1].start
        # The box keeps a one-pixel margin of background: the contours are those of the image.
        contours, _ = cv2.findContours(
            mask[box].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(left, top)
        )
        outline = tuple(int(c * 0.6) for c in color)
        cv2.drawContours(canvas, contours, -1, outline, thickness=1)
        if label:
            x, y = _label_position(mask[box])
            self.output.labels.append((label, (x + left, y + top), color))

    def draw_sem_seg(
        self, sem_seg: Any, area_threshold: Optional[int] = None, alpha: float = 0.8
    ) -> VisImage:
        """Draw an (H, W) class-id map, or (C, H, W) scores (argmax is taken). Classes of
        fewer than ``area_threshold`` pixels and the metadata's ignore_label are skipped."""
        labels = _to_numpy(sem_seg)
        if labels.ndim == 3:
            labels = _argmax_over_classes(labels)
        ignore_label = _meta_value(self.metadata, "ignore_label")
        for category_id in np.unique(labels):
            if ignore_label is not None and category_id == ignore_label:
                continue
            mask = labels == category_id
            if area_threshold is not None and mask.sum() < area_threshold:
                continue
            color = class_color(self.metadata, int(category_id), isthing=False)
            name = class_name(self.metadata, int(category_id), isthing=False)
            self.draw_mask(mask, color, name, alpha)
        return self.output

    def draw_panoptic_seg(
        self,
        panoptic_seg: Any,
        segments_info: Optional[list[dict]],
        area_threshold: Optional[int] = None,
        alpha: float = 0.7,
    ) -> VisImage:
        """Draw an (H, W) segment-id map with its ``segments_info`` (id 0 / absent = void)."""
        if segments_info is None:
            raise ValueError(
                "draw_panoptic_seg needs segments_info (the model's panoptic_seg[1]); "
                "an id map alone is not supported"
            )
        ids = _to_numpy(panoptic_seg)
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(_grayscale_outside(self.img, np.isin(ids, _ids(segments_info))))
        # Stuff first so that things' outlines and labels stay on top.
        for info in sorted(segments_info, key=lambda s: bool(s.get("isthing", False))):
            mask = ids == info["id"]
            if area_threshold is not None and mask.sum() < area_threshold:
                continue
            isthing = bool(info.get("isthing", False))
            category_id = int(info["category_id"])
            color = class_color(self.metadata, category_id, isthing)
            self.draw_mask(mask, color, class_name(self.metadata, category_id, isthing), alpha)
        return self.output

    draw_panoptic_seg_predictions = draw_panoptic_seg  # detectron2's older name

    def draw_instance_predictions(self, predictions: Any) -> VisImage:
        """Draw ``predictions`` (Instances: pred_masks (n, H, W), pred_classes, optional
        scores), largest first, labelled "class 95%"."""
        masks = _to_numpy(predictions.pred_masks)  # bool, or float (drawn where > 0.5)
        classes = _to_numpy(predictions.pred_classes).astype(int)
        scores = _to_numpy(predictions.scores) if predictions.has("scores") else None
        alpha = 0.5
        if self._instance_mode == ColorMode.IMAGE_BW:
            drawn = np.zeros(self.img.shape[:2], dtype=bool)
            for i in range(len(masks)):
                drawn |= _binary(masks[i])
            self.output.reset_image(_grayscale_outside(self.img, drawn))
            alpha = 0.3
        areas = np.array([np.count_nonzero(_binary(m)) for m in masks], dtype=np.int64)
        order = np.argsort(-areas)  # large masks first
        for i in order:
            name = class_name(self.metadata, int(classes[i]), isthing=True)
            if scores is not None:
                name = f"{name} {scores[i] * 100:.0f}%"
            color = class_color(self.metadata, int(classes[i]), True)
            self.draw_mask(_binary(masks[i]), color, name, alpha)
        return self.output

    def get_output(self) -> VisImage:
        return self.output


def _ids(segments_info: list[dict]) -> list[int]:
    return [int(info["id"]) for info in segments_info]


def _binary(mask: np.ndarray) -> np.ndarray:
    """An instance mask as bool: itself when bool, else where > 0.5."""
    return mask if mask.dtype == bool else mask > 0.5


def _argmax_over_classes(scores: np.ndarray, rows_per_band: int = 256) -> np.ndarray:
    """``scores.argmax(axis=0)`` of (C, H, W) scores, a band of rows at a time (numpy would
    copy all the scores to reduce over their first axis), in the smallest integer type."""
    labels = np.empty(scores.shape[1:], dtype=np.min_scalar_type(max(len(scores) - 1, 0)))
    for top in range(0, scores.shape[1], rows_per_band):
        labels[top : top + rows_per_band] = scores[:, top : top + rows_per_band].argmax(axis=0)
    return labels


def _bounding_box(mask: np.ndarray) -> Optional[tuple[slice, slice]]:
    """(rows, columns) of ``mask``'s bounding box grown by one pixel inside the image, or
    None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    height, width = mask.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)),
    )


def _blend(canvas: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float):
    """``canvas`` (h, w, 3) uint8 := (1 - alpha) x canvas + alpha x color where ``mask``,
    in float32 and rounded, about a million pixels at a time."""
    fill = np.array(color, dtype=np.float32)
    rows_per_band = max(1, (1 << 20) // max(1, canvas.shape[1]))
    for top in range(0, canvas.shape[0], rows_per_band):
        band, inside = canvas[top : top + rows_per_band], mask[top : top + rows_per_band]
        region = band[inside].astype(np.float32)
        band[inside] = (region * (1 - alpha) + fill * alpha).round().astype(np.uint8)


def _grayscale_outside(img: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
    """``img`` in grey, except the pixels of ``keep`` ((H, W) bool) which stay in colour."""
    gray = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = np.repeat(gray.round().astype(np.uint8)[:, :, None], 3, axis=2)
    if keep is not None and keep.shape == img.shape[:2]:
        out[keep] = img[keep]
    return out


def _label_position(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its border."""
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return int(x), int(y)


def _put_label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]):
    scale = max(0.3, min(image.shape[:2]) / 900)
    (width, height), _ = cv2.getTextSize(text, _TEXT_FONT, scale, 1)
    x = int(np.clip(x - width // 2, 0, max(0, image.shape[1] - width)))
    y = int(np.clip(y + height // 2, height, image.shape[0] - 1))
    brightness = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if brightness > 150 else (255, 255, 255)
    cv2.putText(image, text, (x, y), _TEXT_FONT, scale, color, 2, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), _TEXT_FONT, scale, text_color, 1, cv2.LINE_AA)


def draw_predictions(
    image: np.ndarray,
    predictions: dict,
    metadata: Any = None,
    confidence_threshold: float = 0.5,
    instance_mode: ColorMode = ColorMode.IMAGE,
) -> np.ndarray:
    """Draw a model's outputs for one RGB image as the published demo does.

    Panoptic predictions when present; otherwise the semantic map and then the instances
    whose score is at least ``confidence_threshold``. Returns an (H, W, 3) RGB array.
    """
    visualizer = Visualizer(image, metadata, instance_mode=instance_mode)
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        return visualizer.draw_panoptic_seg(panoptic_seg, segments_info).get_image()
    if "sem_seg" in predictions:
        visualizer.draw_sem_seg(predictions["sem_seg"])
    if "instances" in predictions:
        instances = predictions["instances"]
        visualizer.draw_instance_predictions(instances[instances.scores >= confidence_threshold])
    return visualizer.output.get_image()


def drawn_outputs(predictions: dict) -> dict:
    """The outputs :func:`draw_predictions` draws: "panoptic_seg" when present, else
    "sem_seg" and "instances"."""
    if "panoptic_seg" in predictions:
        return {"panoptic_seg": predictions["panoptic_seg"]}
    return {key: predictions[key] for key in ("sem_seg", "instances") if key in predictions}
