"""``ytvis``: a YouTube-VIS video dict -> a clip of frames with their tracked instances.

The published ``YTVISDatasetMapper`` (Mask2Former's ``mask2former_video``), for training and
testing. A training sample is a clip: a random reference frame and INPUT.SAMPLING_FRAME_NUM - 1
more frames drawn (with replacement) among the frames within INPUT.SAMPLING_FRAME_RANGE of it,
in time order unless INPUT.SAMPLING_FRAME_SHUFFLE. A test sample is the whole video.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from ...config import ConfigError, configurable
from ...structures import BitMasks, Instances, polygons_to_bitmask
from ..detection_utils import (
    BadSampleError,
    check_image_size,
    image_to_tensor,
    read_image,
    shortest_edge_resize,
    transform_instance_annotations,
)
from ..transforms import (
    Augmentation,
    ByClip,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    Transform,
    TransformList,
    apply_augmentations_to_clip,
)
from .build import register_dataset_mapper
from .mapper_utils import ImageMapperBase, refuse_unread_inputs

__all__ = ["YTVISDatasetMapper", "clip_instances", "sample_frame_indices", "ytvis_augmentations"]

_SIZE_SAMPLING = ("choice", "range", "choice_by_clip", "range_by_clip")
_FLIPS = ("none", "horizontal", "vertical", "flip_by_clip")
_VIDEO_KEYS = (
    "SAMPLING_FRAME_NUM",
    "SAMPLING_FRAME_RANGE",
    "SAMPLING_FRAME_SHUFFLE",
    "AUGMENTATIONS",
)


def sample_frame_indices(length: int, num_frames: int, frame_range: int, shuffle: bool) -> list:
    """Frame indices of a training clip of a ``length``-frame video (NumPy's global generator).

    A reference frame uniformly, then ``num_frames - 1`` frames drawn with replacement among
    the other frames at most ``frame_range`` away; sorted, or shuffled with ``shuffle``. Where
    no other frame is in range (a one-frame video, ``frame_range`` 0) the reference frame is
    repeated (the published mapper fails there).
    """
    reference = int(np.random.randint(length))
    low, high = max(0, reference - frame_range), min(length, reference + frame_range + 1)
    others = [i for i in range(low, high) if i != reference]
    if others:
        drawn = np.random.choice(others, num_frames - 1).tolist()
    else:
        drawn = [reference] * (num_frames - 1)
    indices = sorted(drawn + [reference])
    if shuffle:
        np.random.shuffle(indices)
    return indices


def _config_choice(cfg_value: str, key: str, choices: Sequence[str]) -> str:
    if cfg_value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)} for videos, got {cfg_value!r}")
    return cfg_value


def ytvis_augmentations(cfg, is_train: bool) -> list[Augmentation]:
    """The published video augmentations, in its order.

    Training: INPUT.CROP (a new crop per frame, as published), the shortest-edge resize
    (INPUT.MIN_SIZE_TRAIN_SAMPLING; "*_by_clip" draws one size per clip), the flip
    (INPUT.RANDOM_FLIP; "flip_by_clip" is horizontal with one decision per clip, "horizontal"
    and "vertical" decide per frame). Testing: the shortest-edge resize to INPUT.MIN_SIZE_TEST.
    """
    if not is_train:
        return [shortest_edge_resize(cfg, False)]
    if cfg.INPUT.AUGMENTATIONS:
        raise ConfigError(
            f"INPUT.AUGMENTATIONS = {list(cfg.INPUT.AUGMENTATIONS)}: the published extra video "
            "augmentations (brightness, contrast, saturation, rotation) are not implemented; "
            "set it to []"
        )
    augmentations: list[Augmentation] = []
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    sampling = _config_choice(
        cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, "INPUT.MIN_SIZE_TRAIN_SAMPLING", _SIZE_SAMPLING
    )
    resize = ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, sampling.replace("_by_clip", "")
    )
    augmentations.append(ByClip(resize) if sampling.endswith("_by_clip") else resize)
    flip = _config_choice(cfg.INPUT.RANDOM_FLIP, "INPUT.RANDOM_FLIP", _FLIPS)
    if flip == "flip_by_clip":
        augmentations.append(ByClip(RandomFlip(horizontal=True)))
    elif flip != "none":
        augmentations.append(
            RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")
        )
    return augmentations


def _frame_masks(
    annotations: list[dict],
    transforms: TransformList,
    size: tuple[int, int],
    input_size: tuple[int, int],
    track_index: dict,
    file_name: str,
) -> np.ndarray:
    """(N, H, W) bool masks of the tracks in one augmented frame; empty where absent."""
    masks = np.zeros((len(track_index), *size), dtype=bool)
    for annotation in annotations:
        if annotation["id"] not in track_index:  # a crowd region
            continue
        moved = transform_instance_annotations(
            {"segmentation": annotation["segmentation"]},
            transforms,
            size,
            input_size=input_size,
            file_name=file_name,
        )["segmentation"]
        mask = polygons_to_bitmask(moved, *size) if isinstance(moved, list) else moved
        masks[track_index[annotation["id"]]] = mask.astype(bool)
    return masks


def clip_instances(
    frame_annotations: Sequence[list[dict]],
    transforms: Sequence[TransformList],
    sizes: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    file_names: Sequence[str],
) -> list[Instances]:
    """One :class:`Instances` per frame of a clip, with the same N tracks in the same order.

    Tracks are the clip's non-crowd annotation ids, sorted. Per frame: gt_classes (N,) int64,
    the track's class in every frame; gt_ids (N,) int64, the annotation id where the track is
    visible after augmentation and -1 where it is absent (no annotation, or cropped away);
    gt_masks :class:`BitMasks` (N, H, W), empty where absent; gt_boxes, the masks' tight
    boxes (zero where absent). The published mapper gives an absent track the class
    MODEL.SEM_SEG_HEAD.NUM_CLASSES in that frame; here its class is the same in every frame.
    """
    classes = {
        a["id"]: int(a["category_id"])
        for annos in frame_annotations
        for a in annos
        if not a.get("iscrowd", 0)
    }
    tracks = sorted(classes)
    track_index = {track: k for k, track in enumerate(tracks)}
    instances = []
    for annos, tfm, size, file_name in zip(frame_annotations, transforms, sizes, file_names):
        masks = BitMasks(_frame_masks(annos, tfm, size, input_size, track_index, file_name))
        ids = torch.tensor(tracks, dtype=torch.int64)
        frame = Instances(size)
        frame.gt_classes = torch.tensor([classes[t] for t in tracks], dtype=torch.int64)
        frame.gt_ids = torch.where(masks.nonempty(), ids, torch.full_like(ids, -1))
        frame.gt_masks = masks
        frame.gt_boxes = masks.get_bounding_boxes()
        instances.append(frame)
    return instances


@register_dataset_mapper("ytvis")
class YTVISDatasetMapper(ImageMapperBase):
    """Video instance segmentation mapper ("ytvis"), for training (``is_train=True``: a
    sampled clip, augmented) and testing (every frame, resized). Video datasets get it unless
    INPUT.DATASET_MAPPER_NAME names another video mapper (see ``build_dataset_mapper``).

    Input: a dict of :func:`~mask2former.data.datasets.load_ytvis_json`. Output: the dict
    without "annotations", with "image" a list of T (3, H', W') uint8 tensors in
    INPUT.FORMAT, "file_names" the T frames' files, the video's "video_id", "length",
    "height" and "width", and when training "instances": T :class:`Instances` (see
    :func:`clip_instances`). Every frame of a clip has the same size unless a crop makes it
    otherwise; the augmentations are :func:`ytvis_augmentations`.
    """

    #: a video mapper: video datasets use it for training and (as ``cls(cfg, False)``) testing
    maps_videos = True

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[Augmentation | Transform],
        image_format: str,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 5,
        sampling_frame_shuffle: bool = False,
    ):
        if sampling_frame_num < 1 or sampling_frame_range < 0:
            raise ValueError(
                f"sampling_frame_num must be >= 1 and sampling_frame_range >= 0, got "
                f"{sampling_frame_num} and {sampling_frame_range}"
            )
        super().__init__(is_train, augmentations, image_format)
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        missing = [k for k in _VIDEO_KEYS if k not in cfg.INPUT]
        if missing:
            raise ConfigError(
                f"the video mapper reads INPUT.{missing[0]}, which this config lacks: start from "
                "get_cfg(), or add the video keys with "
                "mask2former.config.add_maskformer2_video_config(cfg)"
            )
        if is_train and not cfg.MODEL.MASK_ON:
            raise ConfigError(
                "MODEL.MASK_ON = False: the video mapper always loads the instance masks a video "
                "model trains on (as the published one does); set MODEL.MASK_ON True"
            )
        refuse_unread_inputs(
            cfg,
            "ytvis",
            {
                "INPUT.COLOR_AUG_SSD": False,
                "INPUT.SIZE_DIVISIBILITY": -1,
                "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
            },
        )
        if cfg.INPUT.SAMPLING_FRAME_NUM < 1 or cfg.INPUT.SAMPLING_FRAME_RANGE < 0:
            raise ConfigError(
                f"INPUT.SAMPLING_FRAME_NUM must be >= 1 and INPUT.SAMPLING_FRAME_RANGE >= 0, "
                f"got {cfg.INPUT.SAMPLING_FRAME_NUM} and {cfg.INPUT.SAMPLING_FRAME_RANGE}"
            )
        return {
            "is_train": is_train,
            "augmentations": ytvis_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
        }

    def _frame_indices(self, video: dict) -> list[int]:
        length = video["length"]
        if length < 1 or len(video["file_names"]) != length:
            raise BadSampleError(
                video["file_names"][0] if video["file_names"] else f"video {video['video_id']}",
                f"video {video['video_id']} has length {length} and "
                f"{len(video['file_names'])} file_names",
            )
        if not self.is_train:
            return list(range(length))
        return sample_frame_indices(
            length, self.sampling_frame_num, self.sampling_frame_range, self.sampling_frame_shuffle
        )

    def _read_frame(self, file_name: str, video: dict) -> np.ndarray:
        image = read_image(file_name, format=self.image_format)
        check_image_size(
            {"file_name": file_name, "height": video["height"], "width": video["width"]}, image
        )
        return image

    def __call__(self, video: dict) -> dict:
        indices = self._frame_indices(video)
        file_names = [video["file_names"][i] for i in indices]
        frames = [self._read_frame(f, video) for f in file_names]
        images, transforms = apply_augmentations_to_clip(self.augmentations, frames)
        out = {
            k: copy.deepcopy(v) for k, v in video.items() if k not in ("annotations", "file_names")
        }
        out["file_names"] = file_names
        out["image"] = [image_to_tensor(image) for image in images]
        if self.is_train:
            annotations = video.get("annotations")
            if annotations is None or len(annotations) != video["length"]:
                raise BadSampleError(
                    file_names[0],
                    f"video {video['video_id']} needs 'annotations', one list per frame, to train",
                )
            out["instances"] = clip_instances(
                [annotations[i] for i in indices],
                transforms,
                [image.shape[:2] for image in images],
                (video["height"], video["width"]),
                file_names,
            )
        return out
