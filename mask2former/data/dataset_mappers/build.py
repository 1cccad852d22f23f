"""Registry of dataset mappers, and the choice of a dataset's mapper.

Image datasets train through the mapper ``INPUT.DATASET_MAPPER_NAME`` names and are tested
through ``DatasetMapper(cfg, False)``. Video datasets (metadata ``evaluator_type`` "ytvis",
the YouTube-VIS format) go through a video mapper in training and testing: the named one if it
maps videos, else "ytvis" (see :func:`dataset_mapper_name`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fvcore.common.registry import Registry

from ...config import ConfigError, get_cfg
from ...utils.registry import lookup
from ..catalog import MetadataCatalog
from .dataset_mapper import DatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "VIDEO_EVALUATOR_TYPES",
    "build_dataset_mapper",
    "dataset_mapper_name",
    "is_video_dataset",
    "register_dataset_mapper",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Dataset mappers. A registered class is built as ``cls(cfg, True)`` and called with one
dataset dict (the catalog's format); it returns a new dict with "image" (3, H, W) uint8 in
INPUT.FORMAT, "instances" (gt_classes (n,) int64, gt_masks (n, H, W) bool), "sem_seg" (H, W)
int64 where the mapper makes one, and the input's "file_name", "image_id", "height", "width".
It raises ``BadSampleError`` (naming the file) for an unusable sample.

A video mapper (class attribute ``maps_videos = True``, e.g. ``YTVISDatasetMapper``, "ytvis")
takes a video dict and returns lists instead, one entry per frame of the clip: "image" (T
tensors), "instances" (T Instances), "file_names"; it maps test videos too, as
``cls(cfg, False)``.
"""

#: ``evaluator_type`` of the datasets whose dicts are videos (the YouTube-VIS format).
VIDEO_EVALUATOR_TYPES = ("ytvis",)
#: The mapper of video datasets when INPUT.DATASET_MAPPER_NAME keeps its (image) default.
DEFAULT_VIDEO_MAPPER = "ytvis"


def register_dataset_mapper(name: str) -> Callable[[type], type]:
    """Class decorator: register a mapper under its config name (e.g. "mask_former_semantic")."""

    def decorator(cls: type) -> type:
        DATASET_MAPPER_REGISTRY._do_register(name, cls)  # fvcore registers by __name__ otherwise
        return cls

    return decorator


def is_video_dataset(dataset_name: str) -> bool:
    """Whether the registered dataset holds videos (its ``evaluator_type`` is in
    :data:`VIDEO_EVALUATOR_TYPES`)."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type") in VIDEO_EVALUATOR_TYPES


def _maps_videos(mapper_name: str) -> bool:
    if mapper_name not in DATASET_MAPPER_REGISTRY:
        return False
    return getattr(DATASET_MAPPER_REGISTRY.get(mapper_name), "maps_videos", False)


def dataset_mapper_name(cfg, dataset_names: Sequence[str]) -> str:
    """The registered name of the mapper for ``dataset_names``.

    Image datasets (or none): ``INPUT.DATASET_MAPPER_NAME``, which must not be a video mapper.
    Video datasets: ``INPUT.DATASET_MAPPER_NAME`` if it maps videos; "ytvis" if it is the
    default (the published video configs name no mapper: the published ``train_net_video.py``
    always uses its YouTube-VIS mapper); any other image mapper is refused, as is a mix of
    image and video datasets. Errors are ``ConfigError`` naming the key and the datasets.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    video = [is_video_dataset(n) for n in dataset_names]
    if not any(video):
        if dataset_names and _maps_videos(name):
            raise ConfigError(
                f"INPUT.DATASET_MAPPER_NAME = {name!r} maps videos, but {tuple(dataset_names)} "
                "are image datasets: name an image mapper"
            )
        return name
    if not all(video):
        kinds = {n: "video" if v else "image" for n, v in zip(dataset_names, video)}
        raise ConfigError(f"image and video datasets cannot be mapped together: {kinds}")
    if _maps_videos(name):
        return name
    default = get_cfg().INPUT.DATASET_MAPPER_NAME
    if name == default:
        return DEFAULT_VIDEO_MAPPER
    raise ConfigError(
        f"INPUT.DATASET_MAPPER_NAME = {name!r} maps images, but {tuple(dataset_names)} are video "
        f"datasets: name a video mapper ({DEFAULT_VIDEO_MAPPER!r}) or keep the default "
        f"{default!r}, which selects {DEFAULT_VIDEO_MAPPER!r} for video datasets"
    )


def build_dataset_mapper(
    cfg, is_train: bool, dataset_names: str | Sequence[str] | None = None
) -> Callable[[dict], dict]:
    """The mapper of ``dataset_names`` (default: ``DATASETS.TRAIN`` when ``is_train``, else
    ``DATASETS.TEST``), chosen by :func:`dataset_mapper_name`: built as ``cls(cfg, True)`` for
    training; for testing ``DatasetMapper(cfg, False)`` (images, as the published recipes) or
    the video mapper as ``cls(cfg, False)``."""
    if dataset_names is None:
        dataset_names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    name = dataset_mapper_name(cfg, list(dataset_names))
    if not is_train and not _maps_videos(name):
        return DatasetMapper(cfg, False)
    return lookup(DATASET_MAPPER_REGISTRY, name, "INPUT.DATASET_MAPPER_NAME")(cfg, is_train)
