"""``VideoVisualizer``: draws predictions over video frames (detectron2's API)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .visualizer import ColorMode, VisImage, Visualizer

__all__ = ["VideoVisualizer"]


class VideoVisualizer:
    """Draws each frame's predictions with :class:`Visualizer`.

    detectron2's ``VideoVisualizer`` matches instances across frames to keep their colours;
    here every segment has its class's colour from the metadata, which is the same in every
    frame, so no matching is needed. ``frame`` is an (H, W, 3) RGB array; every method
    returns a :class:`VisImage`.
    """

    def __init__(self, metadata: Any, instance_mode: ColorMode = ColorMode.IMAGE):
        instance_mode = ColorMode(instance_mode)
        if instance_mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            raise ValueError(
                f"VideoVisualizer supports ColorMode.IMAGE and IMAGE_BW, got {instance_mode}"
            )
        self.metadata = metadata
        self._instance_mode = instance_mode

    def _visualizer(self, frame: np.ndarray) -> Visualizer:
        return Visualizer(frame, self.metadata, instance_mode=self._instance_mode)

    def draw_instance_predictions(self, frame: np.ndarray, predictions: Any) -> VisImage:
        return self._visualizer(frame).draw_instance_predictions(predictions)

    def draw_sem_seg(
        self, frame: np.ndarray, sem_seg: Any, area_threshold: Optional[int] = None
    ) -> VisImage:
        return self._visualizer(frame).draw_sem_seg(sem_seg, area_threshold=area_threshold)

    def draw_panoptic_seg(
        self,
        frame: np.ndarray,
        panoptic_seg: Any,
        segments_info: Optional[list[dict]],
        area_threshold: Optional[int] = None,
        alpha: float = 0.5,
    ) -> VisImage:
        return self._visualizer(frame).draw_panoptic_seg(
            panoptic_seg, segments_info, area_threshold=area_threshold, alpha=alpha
        )

    draw_panoptic_seg_predictions = draw_panoptic_seg  # detectron2's older name
