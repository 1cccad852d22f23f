"""``VideoMaskFormer``: Mask2Former for video instance segmentation (YouTube-VIS)."""

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from mask2former.config import ConfigError, configurable
from mask2former.structures import ImageList, Instances, RLEMasks

from ..backbone.build import build_backbone
from ..criterion import build_criterion
from ..heads.build import build_sem_seg_head
from ..postprocessing import top_video_pairs, video_instance_inference, video_masks_rle
from ..video_clips import (
    ClipLinker,
    ClipPrediction,
    TrackScores,
    check_clip_options,
    clip_options_from_config,
    iter_clips,
)
from .build import META_ARCH_REGISTRY
from .images import normalize_and_pad_images

#: Instances kept per video at inference, as published.
TOPK_PER_VIDEO = 10


@META_ARCH_REGISTRY.register()
class VideoMaskFormer(nn.Module):
    """Backbone and pixel decoder per frame, one set of queries per clip, video instance output.

    Takes the batched videos of the YouTube-VIS dataset mapper: per video a dict with
    ``"image"``: list of T (C, H, W) frames (in ``INPUT.FORMAT``, all of one size),
    optional ``"height"``/``"width"`` (the output size), and for training ``"instances"``: list
    of T per-frame :class:`Instances`, each listing the same tracks in the same order, with
    ``gt_classes`` (n,), ``gt_masks`` (n, H, W) and ``gt_ids`` (n,) (-1 where the track is
    absent from the frame). The transformer decoder must take ``num_frames`` (e.g.
    ``VideoMultiScaleMaskedTransformerDecoder``).

    Training: every video of the batch has the same number of frames T (the mapper samples
    ``INPUT.SAMPLING_FRAME_NUM``), each is one clip; returns the criterion's weighted losses
    on clip masks (see :meth:`prepare_targets`). Inference: one video per call, all its frames
    one clip; returns the dict of :func:`video_instance_inference` (top 10 instances, masks in
    every frame at the output size), as published (not a list).

    Long videos (an extension): with ``clip_length`` > 0 (``MODEL.MASK_FORMER.TEST.CLIP_LENGTH``)
    inference runs clip by clip, consecutive clips sharing ``clip_overlap`` frames on which
    their queries are linked into tracks (see :mod:`..video_clips`), so memory is bounded by the
    clip; ``"image"`` may then be any iterable of frames (read one clip at a time). The output
    is the same dict, each instance's masks an :class:`RLEMasks` (see :meth:`clip_inference`);
    on a video of at most ``clip_length`` frames it equals the whole-video output.

    Like the published model, it reads none of ``MODEL.MASK_FORMER.TEST``'s thresholds
    (``OBJECT_MASK_THRESHOLD``, ``OVERLAP_THRESHOLD``: the published one stores and never uses
    them) and gives instances only: ``from_config`` refuses ``SEMANTIC_ON``/``PANOPTIC_ON`` or
    ``INSTANCE_ON`` False instead of ignoring them.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: nn.Module | None,
        size_divisibility: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        test_topk_per_video: int = TOPK_PER_VIDEO,
        clip_length: int = 0,
        clip_overlap: int = 2,
    ):
        super().__init__()
        check_clip_options(clip_length, clip_overlap, ("clip_length", "clip_overlap"))
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        # Negative: the backbone's own divisibility; 0: no padding beyond the batch's max size.
        self.size_divisibility = (
            backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.test_topk_per_video = test_topk_per_video
        self.clip_length = clip_length
        self.clip_overlap = clip_overlap

    @classmethod
    def from_config(cls, cfg) -> dict:
        _check_video_outputs(cfg)
        clip_length, clip_overlap = clip_options_from_config(cfg)
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "criterion": build_criterion(cfg),
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "clip_length": clip_length,
            "clip_overlap": clip_overlap,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if self.training:
            return self.losses(batched_inputs)
        if len(batched_inputs) != 1:
            raise ValueError(
                f"VideoMaskFormer inference takes one video per batch, got {len(batched_inputs)}"
            )
        return self.inference(batched_inputs[0])

    def preprocess(self, frames: list[Tensor]) -> ImageList:
        """Frames (C, H, W) normalised and padded to one size: (len(frames), C, H_pad, W_pad)."""
        return normalize_and_pad_images(
            frames, self.pixel_mean, self.pixel_std, self.size_divisibility
        )

    def forward_clips(self, images: Tensor, num_frames: int) -> dict:
        """The network on N clips of ``num_frames`` consecutive frames.

        images: (N*T, C, H, W) normalised frames -> the decoder's ``{"pred_logits": (N, Q, K+1),
        "pred_masks": (N, Q, T, H/4, W/4), "aux_outputs": [...]}``.
        """
        features = self.backbone(images)
        return self.sem_seg_head(features, num_frames=num_frames)

    def losses(self, batched_inputs: list[dict]) -> dict[str, Tensor]:
        """Weighted losses of a batch of clips, one per video."""
        if self.criterion is None:
            raise RuntimeError("VideoMaskFormer was built without a criterion and cannot train")
        num_frames = _clip_length(batched_inputs)
        images = self.preprocess([frame for video in batched_inputs for frame in video["image"]])
        outputs = self.forward_clips(images.tensor, num_frames)
        targets = self.prepare_targets(batched_inputs, images)
        return self.criterion(outputs, targets)

    def prepare_targets(self, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Per video the targets of :func:`clip_targets`, masks zero-padded to the batch size."""
        padded_size = tuple(images.tensor.shape[-2:])
        targets = []
        for i, video in enumerate(batched_inputs):
            if "instances" not in video:
                raise KeyError(f"VideoMaskFormer training needs 'instances' in video {i}")
            if len(video["instances"]) != len(video["image"]):
                raise ValueError(
                    f"video {i}: {len(video['image'])} frames but {len(video['instances'])} "
                    "'instances' (one per frame)"
                )
            frames = [inst.to(self.device) for inst in video["instances"]]
            try:
                targets.append(clip_targets(frames, padded_size))
            except ValueError as e:
                raise ValueError(f"video {i}: {e}") from e
        return targets

    def inference(self, video: dict) -> dict:
        """One video's instances (see :func:`video_instance_inference`), clip by clip when
        ``clip_length`` > 0 (see :meth:`clip_inference`)."""
        if self.clip_length > 0:
            return self.clip_inference(video)
        frames = video["image"]
        if len({tuple(f.shape[-2:]) for f in frames}) != 1:
            raise ValueError("VideoMaskFormer inference needs the frames of a video at one size")
        images = self.preprocess(frames)
        outputs = self.forward_clips(images.tensor, num_frames=len(frames))
        image_size = images.image_sizes[0]
        return video_instance_inference(
            outputs["pred_logits"][0],
            outputs["pred_masks"][0],
            padded_size=tuple(images.tensor.shape[-2:]),
            image_size=image_size,
            output_size=(video.get("height", image_size[0]), video.get("width", image_size[1])),
            topk=self.test_topk_per_video,
        )

    @torch.no_grad()
    def predict_clips(
        self,
        frames: Iterable[Tensor],
        clip_length: int | None = None,
        clip_overlap: int | None = None,
    ) -> Iterator[ClipPrediction]:
        """Run the video clip by clip, its queries linked into tracks from clip to clip.

        frames: the video's (C, H, W) frames, all of one size, any iterable (a list, a lazy
        sequence, a generator reading a file): they are read one clip at a time. Yields each
        clip's :class:`ClipPrediction` (the frames it contributes, rows by track) once the clip
        has run; nothing of a clip is kept after the next one but its ``clip_overlap`` last
        frames' masks at the mask resolution. ``clip_length`` / ``clip_overlap`` default to the
        model's; a length of 0 runs the whole video as one clip.
        """
        length = self.clip_length if clip_length is None else clip_length
        overlap = self.clip_overlap if clip_overlap is None else clip_overlap
        check_clip_options(length, overlap, ("clip_length", "clip_overlap"))
        linker = ClipLinker(overlap)
        sizes: set[tuple[int, int]] = set()
        for clip in iter_clips(frames, length, overlap):
            sizes.update(tuple(f.shape[-2:]) for f in clip.frames)
            if len(sizes) != 1:
                raise ValueError(
                    "VideoMaskFormer inference needs the frames of a video at one size, got "
                    f"{sorted(sizes)} by frame {clip.start + len(clip.frames) - 1}"
                )
            images = self.preprocess(clip.frames)
            outputs = self.forward_clips(images.tensor, num_frames=len(clip.frames))
            order = linker(outputs["pred_masks"][0])
            prediction = ClipPrediction(
                first_frame=clip.start + clip.shared,
                class_logits=outputs["pred_logits"][0][order],
                mask_logits=outputs["pred_masks"][0][order, clip.shared :],
                image_size=images.image_sizes[0],
                padded_size=tuple(images.tensor.shape[-2:]),
            )
            del images, outputs  # free the auxiliary outputs before the caller uses the clip
            yield prediction

    def clip_inference(self, video: dict) -> dict:
        """:meth:`inference` clip by clip (:meth:`predict_clips`): the top
        ``test_topk_per_video`` (track, class) pairs by the track's class probability averaged
        over the video's frames (each frame counting the probabilities of the clip that
        predicted it), masks as in :func:`video_instance_inference`.

        Returns ``{"image_size", "pred_scores", "pred_labels", "pred_masks"}`` as
        :meth:`inference` does, each instance's masks an :class:`RLEMasks` of T frames (index
        it for a frame's (H, W) bool tensor, ``.tensor()`` for all, ``.rles`` for the
        encodings): every track's masks are encoded as its frames come, the float masks of
        one frame at a time.
        """
        scores = TrackScores()
        rles: list[list[dict]] = []
        output_size = None
        for clip in self.predict_clips(video["image"]):
            if output_size is None:
                height, width = clip.image_size
                output_size = (video.get("height", height), video.get("width", width))
                rles = [[] for _ in range(len(clip.class_logits))]
            scores.add(clip.class_logits, clip.num_frames)
            clip_rles = video_masks_rle(
                clip.mask_logits, clip.padded_size, clip.image_size, output_size
            )
            for track_rles, new_rles in zip(rles, clip_rles):
                track_rles.extend(new_rles)
        if output_size is None:
            raise ValueError("VideoMaskFormer inference got a video without frames")
        top_scores, labels, tracks = top_video_pairs(scores.mean(), self.test_topk_per_video)
        return {
            "image_size": output_size,
            "pred_scores": top_scores.tolist(),
            "pred_labels": labels.tolist(),
            "pred_masks": [RLEMasks(rles[k], *output_size) for k in tracks.tolist()],
        }


def clip_targets(frames: list[Instances], padded_size: tuple[int, int]) -> dict[str, Tensor]:
    """The targets of one clip from its per-frame instances (all listing the same tracks).

    Returns ``{"labels": (n,) long, "ids": (n, T) long, "masks": (n, T, H_pad, W_pad) float}``
    for the n tracks present (``gt_ids`` not -1) in at least one frame, each frame's masks
    zero-padded at the bottom and right. A track keeps its real class in every frame of the
    clip, also where it is absent (the video mapper's ``gt_classes``); that class is its
    label, and classes that differ between frames are refused. (The published mapper gives an
    absent track the placeholder class K in that frame, and the published model takes the
    last frame's class, so a track absent from the last frame trained as "no object".)
    """
    counts = [len(f) for f in frames]
    if len(set(counts)) != 1:
        raise ValueError(f"the frames' instances must list the same tracks, got counts {counts}")
    if not all(f.has("gt_ids") for f in frames):
        raise ValueError("every frame's instances need gt_ids (the track of each instance)")
    ids = torch.stack([f.gt_ids for f in frames], dim=1)  # (n, T)
    classes = torch.stack([f.gt_classes for f in frames], dim=1)  # (n, T)
    masks = classes.new_zeros((counts[0], len(frames), *padded_size), dtype=torch.bool)
    for t, frame in enumerate(frames):
        frame_masks = frame.gt_masks
        frame_masks = frame_masks.tensor if hasattr(frame_masks, "tensor") else frame_masks
        masks[:, t, : frame_masks.shape[-2], : frame_masks.shape[-1]] = frame_masks
    labels = classes[:, 0]
    differ = (classes != labels[:, None]).any(dim=1)
    if differ.any():
        k = int(differ.nonzero()[0])
        raise ValueError(
            f"track {k}'s gt_classes differ between frames ({classes[k].tolist()}): a track "
            "keeps its class in every frame, also where it is absent"
        )
    keep = (ids != -1).any(dim=1)
    return {"labels": labels[keep], "ids": ids[keep], "masks": masks[keep].float()}


def _clip_length(batched_inputs: list[dict]) -> int:
    """The number of frames of every video of a training batch (one clip each)."""
    lengths = [len(video["image"]) for video in batched_inputs]
    if not lengths or len(set(lengths)) != 1 or lengths[0] < 1:
        raise ValueError(
            f"VideoMaskFormer training needs videos of one number of frames, got {lengths}"
        )
    return lengths[0]


def _check_video_outputs(cfg) -> None:
    """Video inference gives instances of whole frames only: refuse a config asking for other
    outputs, or for the image models' sliding-window inference."""
    test = cfg.MODEL.MASK_FORMER.TEST
    wanted = {"SEMANTIC_ON": False, "PANOPTIC_ON": False, "INSTANCE_ON": True}
    for key, value in wanted.items():
        if test[key] != value:
            raise ConfigError(
                f"MODEL.MASK_FORMER.TEST.{key} = {test[key]} is not supported by VideoMaskFormer "
                f"(video instance segmentation only); it must be {value}"
            )
    if cfg.TEST.SLIDING_WINDOW.ENABLED:
        raise ConfigError(
            "TEST.SLIDING_WINDOW.ENABLED = True is not supported by VideoMaskFormer "
            "(sliding-window inference tiles images for semantic and panoptic output); it must be "
            "False"
        )
