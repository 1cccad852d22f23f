"""Long videos as overlapping clips: the clip schedule, and queries linked into tracks.

The published ``VideoMaskFormer`` runs a whole video as one clip, so its memory grows with the
video's length. Run clip by clip instead (``MODEL.MASK_FORMER.TEST.CLIP_LENGTH``), each clip
sharing its first ``overlap`` frames with the previous one, and the only state carried from clip
to clip is the previous clip's masks on those shared frames. The queries of a clip continue the
tracks of the previous clip whose masks they overlap most on the shared frames (Hungarian
matching on the soft IoU of the mask probabilities, as online VIS methods such as MinVIS link
per-frame queries). Every clip has the same Q queries, so there are Q tracks through the video.

Each frame is predicted by the clip that reads it first: a clip contributes its frames after
the shared ones (all of them for the first clip). Its class probabilities count once per such
frame in a track's score (:class:`TrackScores`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from mask2former.config import ConfigError

__all__ = [
    "Clip",
    "ClipLinker",
    "ClipPrediction",
    "TrackScores",
    "check_clip_options",
    "clip_options_from_config",
    "iter_clips",
    "link_queries",
    "overlap_similarity",
]

Frame = TypeVar("Frame")


def check_clip_options(
    length: int, overlap: int, names: tuple[str, str] = ("length", "overlap")
) -> None:
    """Refuse a clip length below 0 (0: the whole video) or an overlap outside [1, length)."""
    length_name, overlap_name = names
    for name, value in ((length_name, length), (overlap_name, overlap)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} = {value!r} must be an integer")
    if length < 0:
        raise ValueError(f"{length_name} = {length} must be >= 0 (0: the whole video as one clip)")
    if overlap < 1 or (length > 0 and overlap >= length):
        bound = f" and below {length_name} = {length}" if length > 0 else ""
        raise ValueError(
            f"{overlap_name} = {overlap} must be at least 1{bound}: consecutive clips are linked "
            "on the frames they share"
        )


def clip_options_from_config(cfg) -> tuple[int, int]:
    """``(CLIP_LENGTH, CLIP_OVERLAP)`` of ``MODEL.MASK_FORMER.TEST``, checked (a ConfigError
    names the key and value)."""
    test = cfg.MODEL.MASK_FORMER.TEST
    prefix = "MODEL.MASK_FORMER.TEST."
    try:
        check_clip_options(
            test.CLIP_LENGTH, test.CLIP_OVERLAP, (prefix + "CLIP_LENGTH", prefix + "CLIP_OVERLAP")
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return test.CLIP_LENGTH, test.CLIP_OVERLAP


@dataclass
class Clip(Generic[Frame]):
    """Frames ``start`` to ``start + len(frames)`` of a video; the first ``shared`` of them
    are the last of the previous clip (0 for the first clip)."""

    start: int
    frames: list[Frame]
    shared: int


def iter_clips(frames: Iterable[Frame], length: int, overlap: int) -> Iterator[Clip[Frame]]:
    """The clips of ``length`` frames (the last may be shorter), each sharing ``overlap``
    frames with the previous one, read lazily: only one clip's frames are held at a time.

    ``length`` 0 gives the whole video as one clip. Frames ``[0, L)``, ``[L-O, 2L-O)``, ...,
    until the frames run out; a clip is only started for frames not in the previous one.
    """
    check_clip_options(length, overlap)
    buffer: list[Frame] = []
    start, shared = 0, 0
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == length:
            yield Clip(start, buffer, shared)
            start, shared = start + length - overlap, overlap
            buffer = buffer[-overlap:]
    if len(buffer) > shared:
        yield Clip(start, buffer, shared)


@dataclass
class ClipPrediction:
    """A clip's predictions for the frames it contributes, its queries listed by track.

    ``first_frame``: the video index of the first of these frames. ``class_logits``: (Q, K+1),
    row i the query continuing track i. ``mask_logits``: (Q, n, h, w), the masks of those
    queries in the n frames (after the frames shared with the previous clip), at the mask
    resolution (a quarter of ``padded_size``). ``image_size``: the frames' size inside the
    padding, ``padded_size``: the padded size the model ran at.
    """

    first_frame: int
    class_logits: Tensor
    mask_logits: Tensor
    image_size: tuple[int, int]
    padded_size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return self.mask_logits.shape[1]


def overlap_similarity(previous: Tensor, current: Tensor) -> Tensor:
    """Soft IoU between two sets of masks on the same frames.

    previous: (P, O, h, w), current: (Q, O, h, w) mask logits -> (P, Q) in [0, 1]: the sum of
    the products of the mask probabilities over the sum of their soft union (a + b - ab);
    0 where both masks are empty.
    """
    a = previous.sigmoid().flatten(1).double()  # (P, O*h*w)
    b = current.sigmoid().flatten(1).double()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return intersection / union.clamp(min=1e-6)


def link_queries(similarity: Tensor) -> Tensor:
    """(P tracks, Q queries) similarity -> (P,) the query continuing each track: the
    assignment of largest total similarity (Hungarian), P <= Q."""
    if similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"{similarity.shape[0]} tracks but only {similarity.shape[1]} queries")
    rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    query_of_track = torch.empty(similarity.shape[0], dtype=torch.long)
    query_of_track[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return query_of_track.to(similarity.device)


class ClipLinker:
    """Orders each clip's queries by track, clip after clip.

    Call it with each clip's mask logits (Q, T, h, w), in video order; it returns the (Q,)
    query of each track in that clip (``masks[order]`` lists the clip's masks by track). The
    first clip's queries start the tracks in their own order; a later clip's queries continue
    the tracks by :func:`link_queries` on the ``overlap`` frames the clips share. Between
    calls it keeps the last ``overlap`` frames' masks, by track.
    """

    def __init__(self, overlap: int):
        if overlap < 1:
            raise ValueError(f"overlap = {overlap}: clips are linked on at least 1 shared frame")
        self.overlap = overlap
        self._tail: Tensor | None = None  # (Q, overlap, h, w), by track

    def __call__(self, mask_logits: Tensor) -> Tensor:
        num_queries, num_frames = mask_logits.shape[:2]
        if self._tail is None:
            order = torch.arange(num_queries, device=mask_logits.device)
        else:
            if num_frames <= self.overlap or self._tail.shape[2:] != mask_logits.shape[2:]:
                raise ValueError(
                    f"a clip of {num_frames} frames of size {tuple(mask_logits.shape[2:])} "
                    f"cannot continue clips sharing {self.overlap} frames of size "
                    f"{tuple(self._tail.shape[2:])}"
                )
            shared = mask_logits[:, : self.overlap]
            order = link_queries(overlap_similarity(self._tail, shared))
        # a copy, so the clip's tensors can be freed
        self._tail = mask_logits[order, -self.overlap :].clone()
        return order


class TrackScores:
    """Class probabilities of Q tracks averaged over the frames each clip contributes.

    ``add(class_logits (Q, K+1), num_frames)`` per clip, its rows by track; ``mean()`` is the
    (Q, K) float32 mean of the clips' softmax probabilities (no-object dropped), each weighted
    by its number of frames. Sums are kept in float64: a single clip's mean is its
    probabilities exactly, as the whole-video inference scores them.
    """

    def __init__(self):
        self._sums: Tensor | None = None
        self.num_frames = 0

    def add(self, class_logits: Tensor, num_frames: int) -> None:
        probs = class_logits.softmax(-1)[:, :-1].double() * num_frames
        self._sums = probs if self._sums is None else self._sums + probs
        self.num_frames += num_frames

    def mean(self) -> Tensor:
        if self._sums is None:
            raise ValueError("no clip was added")
        return (self._sums / self.num_frames).float()
