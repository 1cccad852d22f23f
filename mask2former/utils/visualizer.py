"""Draw semantic, panoptic and instance predictions over an image with OpenCV.

Segments are filled with their class colour from the dataset metadata (``stuff_colors`` for
stuff, ``thing_colors`` for things; a deterministic colour when the metadata has none),
outlined, and labelled with the class name at the segment's most interior pixel.
"""

from __future__ import annotations

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


def _meta_list(metadata: Any, key: str) -> Optional[Sequence]:
    if metadata is None:
        return None
    if hasattr(metadata, "get"):
        return metadata.get(key, None)
    return getattr(metadata, key, None)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Visualizer:
    """Accumulates drawings over an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB image.
        metadata: dataset metadata (class names and colours), or None.
        alpha: opacity of the segment fills.
    """

    def __init__(self, image: np.ndarray, metadata: Any = None, alpha: float = 0.5):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"Visualizer expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        self.canvas = image.copy()
        self.metadata = metadata
        self.alpha = alpha
        self._labels: list[tuple[str, tuple[int, int], tuple[int, int, int]]] = []

    def get_output(self) -> np.ndarray:
        """The drawing as an (H, W, 3) uint8 RGB array, labels on top."""
        out = self.canvas.copy()
        for text, (x, y), color in self._labels:
            _put_label(out, text, x, y, color)
        return out

    def draw_mask(self, mask: np.ndarray, color: tuple[int, int, int], label: str = "") -> None:
        """Fill ``mask`` ((H, W) bool) with ``color``, outline it, and queue its label."""
        mask = mask.astype(bool)
        if not mask.any():
            return
        fill = np.array(color, dtype=np.float32)
        region = self.canvas[mask].astype(np.float32)
        self.canvas[mask] = (region * (1 - self.alpha) + fill * self.alpha).round().astype(np.uint8)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        outline = tuple(int(c * 0.6) for c in color)
        cv2.drawContours(self.canvas, contours, -1, outline, thickness=1)
        if label:
            self._labels.append((label, _label_position(mask), color))

    def draw_sem_seg(self, sem_seg: Any, ignore_label: Optional[int] = None) -> "Visualizer":
        """Draw an (H, W) class-id map, or (C, H, W) scores (argmax is taken)."""
        labels = _to_numpy(sem_seg)
        if labels.ndim == 3:
            labels = labels.argmax(axis=0)
        if ignore_label is None:
            ignore_label = getattr(self.metadata, "ignore_label", None) if self.metadata else None
        for category_id in np.unique(labels):
            if ignore_label is not None and category_id == ignore_label:
                continue
            color = class_color(self.metadata, int(category_id), isthing=False)
            name = class_name(self.metadata, int(category_id), isthing=False)
            self.draw_mask(labels == category_id, color, name)
        return self

    def draw_panoptic_seg(self, panoptic_seg: Any, segments_info: list[dict]) -> "Visualizer":
        """Draw an (H, W) segment-id map with its ``segments_info`` (id 0 / absent = void)."""
        ids = _to_numpy(panoptic_seg)
        # Stuff first so that things' outlines and labels stay on top.
        for info in sorted(segments_info, key=lambda s: bool(s.get("isthing", False))):
            isthing = bool(info.get("isthing", False))
            category_id = int(info["category_id"])
            color = class_color(self.metadata, category_id, isthing)
            name = class_name(self.metadata, category_id, isthing)
            self.draw_mask(ids == info["id"], color, name)
        return self

    def draw_instance_predictions(self, instances: Any) -> "Visualizer":
        """Draw ``instances`` (pred_masks (n, H, W), pred_classes, optional scores)."""
        masks = _to_numpy(instances.pred_masks) > 0.5
        classes = _to_numpy(instances.pred_classes).astype(int)
        scores = _to_numpy(instances.scores) if instances.has("scores") else None
        order = np.argsort(-masks.reshape(len(masks), -1).sum(1))  # large masks first
        for i in order:
            name = class_name(self.metadata, int(classes[i]), isthing=True)
            if scores is not None:
                name = f"{name} {scores[i] * 100:.0f}%"
            self.draw_mask(masks[i], class_color(self.metadata, int(classes[i]), True), name)
        return self


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
    image: np.ndarray, predictions: dict, metadata: Any = None, confidence_threshold: float = 0.5
) -> np.ndarray:
    """Draw a model's outputs for one image as the published demo does.

    Panoptic predictions when present; otherwise the semantic map and then the instances
    whose score is at least ``confidence_threshold``. Returns an (H, W, 3) RGB array.
    """
    visualizer = Visualizer(image, metadata)
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        visualizer.draw_panoptic_seg(panoptic_seg, segments_info)
        return visualizer.get_output()
    if "sem_seg" in predictions:
        visualizer.draw_sem_seg(predictions["sem_seg"])
    if "instances" in predictions:
        instances = predictions["instances"]
        visualizer.draw_instance_predictions(instances[instances.scores >= confidence_threshold])
    return visualizer.get_output()
