"""Predictions drawn over images and video frames (the logic behind demo/demo.py)."""

from __future__ import annotations

import glob
import os
from typing import Iterator

import cv2
import numpy as np

from mask2former.utils.visualizer import ColorMode, draw_predictions, write_rgb

from .predictor import DefaultPredictor

__all__ = ["VisualizationDemo", "expand_inputs", "output_path", "write_rgb"]


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files named by ``patterns`` (paths or globs), sorted; an error names what matched nothing."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        files.extend(matches)
    return files


def output_path(output: str, input_path: str, num_inputs: int) -> str:
    """Where the drawing of ``input_path`` goes: into ``output`` if it is a directory."""
    if os.path.isdir(output) or num_inputs > 1 or output.endswith(os.sep):
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return os.path.join(output, stem + ".png")
    return output


class VisualizationDemo:
    """Runs a :class:`DefaultPredictor` and draws its outputs with the dataset's metadata."""

    def __init__(
        self,
        predictor: DefaultPredictor,
        confidence_threshold: float = 0.5,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ):
        self.predictor = predictor
        self.confidence_threshold = confidence_threshold
        self.instance_mode = instance_mode

    def run_on_image(self, image: np.ndarray) -> tuple[dict, np.ndarray]:
        """``image``: (H, W, 3) uint8 BGR (as OpenCV reads it). Returns outputs, RGB drawing."""
        predictions = self.predictor(image)
        drawing = draw_predictions(
            np.ascontiguousarray(image[:, :, ::-1]),
            predictions,
            self.predictor.metadata,
            self.confidence_threshold,
            self.instance_mode,
        )
        return predictions, drawing

    def run_on_video(self, capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yield the RGB drawing of every frame of an opened ``cv2.VideoCapture``."""
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                return
            yield self.run_on_image(frame_bgr)[1]
