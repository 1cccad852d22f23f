"""Tracked video instances drawn over a video, clip by clip (``demo/demo.py`` with a video model).

A ``VideoMaskFormer`` runs over the video in overlapping clips (:meth:`predict_clips`), its
queries linked into tracks from clip to clip, so a video of any length is read, run and written
with one clip's frames in memory. Each track has one colour (:func:`track_color`) in every
frame; a track is drawn in a clip's frames when its class probability in that clip reaches the
confidence threshold, labelled with the class, the probability and the track id.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import cv2
import numpy as np
from torch import Tensor, nn

from mask2former.modeling.meta_arch.video_maskformer_model import VideoMaskFormer
from mask2former.modeling.postprocessing import video_masks_at_output_size
from mask2former.modeling.video_clips import ClipPrediction
from mask2former.utils.visualizer import Visualizer, class_name, fallback_color

from .predictor import DefaultPredictor

__all__ = ["DEMO_CLIP_LENGTH", "VideoTrackingDemo", "is_video_model", "track_color"]

logger = logging.getLogger(__name__)

#: Frames per clip when the config asks for the whole video at once (CLIP_LENGTH 0).
DEMO_CLIP_LENGTH = 20


def is_video_model(model: nn.Module) -> bool:
    """Whether ``model`` segments videos clip by clip (a :class:`VideoMaskFormer`)."""
    return isinstance(model, VideoMaskFormer)


def track_color(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track, the same in every frame (a fixed colour per id)."""
    return fallback_color(track_id)


class VideoTrackingDemo:
    """Draws a :class:`VideoMaskFormer`'s tracked instances over the frames of a video.

    ``predictor``: a :class:`DefaultPredictor` of a video model (its ``preprocess`` resizes each
    frame as ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` say). Clips are the model's
    ``MODEL.MASK_FORMER.TEST.CLIP_LENGTH`` frames (:data:`DEMO_CLIP_LENGTH` if it is 0, the
    whole-video setting) sharing ``CLIP_OVERLAP`` frames, unless ``clip_length`` /
    ``clip_overlap`` are given.
    """

    def __init__(
        self,
        predictor: DefaultPredictor,
        confidence_threshold: float = 0.5,
        clip_length: int | None = None,
        clip_overlap: int | None = None,
    ):
        if not is_video_model(predictor.model):
            raise TypeError(
                f"VideoTrackingDemo needs a VideoMaskFormer, got {type(predictor.model).__name__}"
            )
        self.predictor = predictor
        self.confidence_threshold = confidence_threshold
        model = predictor.model
        self.clip_length = clip_length or model.clip_length or DEMO_CLIP_LENGTH
        self.clip_overlap = model.clip_overlap if clip_overlap is None else clip_overlap

    def run_on_image(self, image: np.ndarray):
        raise ValueError("a VideoMaskFormer config segments videos: use --video-input")

    def run_on_video(self, capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yield the RGB drawing of every frame of an opened ``cv2.VideoCapture``, in order,
        each clip's frames once the clip has run; frames are read as the clips need them."""
        logger.info(
            "Tracking in clips of %d frames sharing %d", self.clip_length, self.clip_overlap
        )
        pending: deque[np.ndarray] = deque()  # frames read but not drawn yet (BGR)

        def model_frames() -> Iterator[Tensor]:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                pending.append(frame)
                yield self.predictor.preprocess(frame)["image"]

        clips = self.predictor.model.predict_clips(
            model_frames(), self.clip_length, self.clip_overlap
        )
        for clip in clips:
            tracks, labels, scores = visible_tracks(clip, self.confidence_threshold)
            for t in range(clip.num_frames):
                frame_rgb = np.ascontiguousarray(pending.popleft()[:, :, ::-1])
                masks = video_masks_at_output_size(
                    clip.mask_logits[tracks, t : t + 1],
                    clip.padded_size,
                    clip.image_size,
                    frame_rgb.shape[:2],
                )[:, 0]
                yield draw_tracks(
                    frame_rgb,
                    (masks > 0).cpu().numpy(),
                    tracks.tolist(),
                    labels,
                    scores,
                    self.predictor.metadata,
                )


def visible_tracks(clip: ClipPrediction, threshold: float) -> tuple[Tensor, list[int], list[float]]:
    """The tracks whose most likely class reaches ``threshold`` in ``clip``: (track ids (n,),
    their classes, their probabilities)."""
    probs = clip.class_logits.softmax(-1)[:, :-1]
    scores, labels = probs.max(-1)
    tracks = (scores >= threshold).nonzero().flatten()
    return tracks.cpu(), labels[tracks].tolist(), scores[tracks].tolist()


def draw_tracks(
    frame_rgb: np.ndarray,
    masks: np.ndarray,
    track_ids: list[int],
    labels: list[int],
    scores: list[float],
    metadata=None,
) -> np.ndarray:
    """``frame_rgb`` (H, W, 3) with each track's mask ((n, H, W) bool) in its
    :func:`track_color`, largest first, labelled "class 87% #id"; the RGB drawing."""
    visualizer = Visualizer(frame_rgb, metadata)
    for i in np.argsort(-masks.sum(axis=(1, 2)), kind="stable"):
        name = class_name(metadata, labels[i], isthing=True)
        label = f"{name} {scores[i] * 100:.0f}% #{track_ids[i]}"
        visualizer.draw_mask(masks[i], track_color(track_ids[i]), label)
    return visualizer.output.get_image()
