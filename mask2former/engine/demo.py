"""Predictions drawn over images and video frames (the logic behind demo/demo.py)."""

from __future__ import annotations

import glob
import os
from typing import Iterator

import cv2
import numpy as np

from mask2former.utils.visualizer import ColorMode, draw_predictions, drawn_outputs, write_rgb

from .predictor import DefaultPredictor

__all__ = [
    "VIDEO_EXTENSIONS",
    "VisualizationDemo",
    "expand_inputs",
    "open_video_writer",
    "output_path",
    "video_output_path",
    "write_rgb",
]

#: Video files the demo writes (codec mp4v, which OpenCV's FFmpeg puts in each of these).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


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
    """Where the drawing of ``input_path`` goes, its directory created.

    Into ``output`` as ``<input stem>.png`` if ``output`` is a directory (an existing one,
    one ending in a separator, or whenever there are several inputs); else ``output``
    itself, whose extension must be an image format OpenCV writes (ValueError otherwise).
    """
    if _is_directory(output) or num_inputs > 1:
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, _stem(input_path) + ".png")
    if not cv2.haveImageWriter(output):
        raise ValueError(
            f"--output {output!r}: OpenCV writes no image format of that name; give a file "
            f"ending in .png, .jpg, ... or a directory ending in {os.sep!r}"
        )
    _make_parent(output)
    return output


def video_output_path(output: str, video_input: str) -> str:
    """Where the drawn video of ``video_input`` goes, its directory created: into
    ``output`` as ``<video stem>.mp4`` if ``output`` is a directory (an existing one or one
    ending in a separator), else ``output``, which must end in one of ``VIDEO_EXTENSIONS``."""
    if _is_directory(output):
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, _stem(video_input) + ".mp4")
    if os.path.splitext(output)[1].lower() not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"--output {output!r}: a video is written to a file ending in "
            f"{', '.join(VIDEO_EXTENSIONS)}, or into a directory ending in {os.sep!r}"
        )
    _make_parent(output)
    return output


def open_video_writer(path: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An opened ``cv2.VideoWriter`` of ``size`` (width, height) frames in codec mp4v; an
    error names the path when OpenCV cannot open it."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(
            f"OpenCV cannot write the video {path!r} (codec mp4v, {size[0]}x{size[1]} at "
            f"{fps:g} fps)"
        )
    return writer


def _is_directory(output: str) -> bool:
    return os.path.isdir(output) or output.endswith(os.sep)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _make_parent(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


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
        return predictions, self.draw(image, predictions)

    def drawing(self, image: np.ndarray) -> np.ndarray:
        """The RGB drawing of ``image`` (BGR) alone: the outputs it does not show (with
        panoptic on: the semantic scores and the instances) are let go before drawing."""
        return self.draw(image, drawn_outputs(self.predictor(image)))

    def draw(self, image: np.ndarray, predictions: dict) -> np.ndarray:
        """The RGB drawing of ``predictions`` over ``image`` (BGR)."""
        return draw_predictions(
            image[:, :, ::-1],  # a view: the visualizer draws on its own RGB copy
            predictions,
            self.predictor.metadata,
            self.confidence_threshold,
            self.instance_mode,
        )

    def run_on_video(self, capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yield the RGB drawing of every frame of an opened ``cv2.VideoCapture``."""
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                return
            yield self.drawing(frame_bgr)
