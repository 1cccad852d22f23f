"""YouTube-VIS video instance annotations: loader and registration helper.

The file format is the challenge's (one JSON per split)::

    {"videos": [{"id", "file_names": [frame paths relative to the image root], "height",
                 "width", "length"}],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [RLE, polygons or null per frame],
                      "bboxes": [[x, y, w, h] or null per frame], "areas": [...]}],
     "categories": [{"id", "name"}]}

The test splits have no "annotations". An object is annotated in the frames where both its
segmentation and its box are given (elsewhere it is absent, e.g. occluded or out of view).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import pycocotools.mask as mask_util

from mask2former.structures.boxes import BoxMode

from ..catalog import DatasetCatalog, Metadata, MetadataCatalog
from .common import (
    DatasetFormatError,
    load_json,
    require_dir,
    require_files,
    require_keys,
    thing_id_map,
)

logger = logging.getLogger(__name__)

__all__ = ["load_ytvis_json", "register_ytvis_instances"]

_VIDEO_KEYS = ("id", "file_names", "height", "width", "length")
_ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations", "bboxes")


class _Problems:
    """What the loader skips as the published loader does, counted for one warning each."""

    def __init__(self) -> None:
        self.invalid_polygons = 0
        self.half_annotated_frames: list[str] = []


def _require_list(data: dict, key: str, json_file: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise DatasetFormatError(
            f"{json_file}: {key!r} should be a list, got {type(value).__name__}"
        )
    return value


def _check_video(video: Any, index: int, json_file: str) -> None:
    require_keys(video, _VIDEO_KEYS, json_file, f"videos[{index}]")
    file_names, length = video["file_names"], video["length"]
    if not isinstance(file_names, list) or len(file_names) != length:
        count = len(file_names) if isinstance(file_names, list) else type(file_names).__name__
        raise DatasetFormatError(
            f"{json_file}: video {video['id']} has length {length} but {count} file_names"
        )


def _check_annotation(
    anno: Any, index: int, videos: dict[Any, dict], id_map: dict, json_file: str
) -> None:
    require_keys(anno, _ANNOTATION_KEYS, json_file, f"annotations[{index}]")
    video = videos.get(anno["video_id"])
    if video is None:
        raise DatasetFormatError(
            f"{json_file}: annotation {anno['id']} refers to video {anno['video_id']}, which is "
            "not in 'videos'"
        )
    if anno["category_id"] not in id_map:
        raise DatasetFormatError(
            f"{json_file}: annotation {anno['id']} of video {video['id']} has category id "
            f"{anno['category_id']}, which is not in the dataset's metadata (known ids: "
            f"{sorted(id_map)})"
        )
    for key in ("segmentations", "bboxes"):
        per_frame = anno[key]
        if not isinstance(per_frame, list) or len(per_frame) != video["length"]:
            count = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
            raise DatasetFormatError(
                f"{json_file}: annotation {anno['id']} of video {video['id']} has {count} "
                f"{key} for the video's {video['length']} frames (one entry, or null, per frame)"
            )


def _frame_segmentation(
    segm: Any, video: dict, where: str, json_file: str, problems: _Problems
) -> Optional[Any]:
    """A compressed RLE dict or valid polygons; None when no valid polygon is left."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise DatasetFormatError(f"{json_file}: {where}: RLE without counts/size: {segm!r:.80}")
        if list(segm["size"]) != [video["height"], video["width"]]:
            raise DatasetFormatError(
                f"{json_file}: {where}: RLE of size {segm['size']} in a video of "
                f"{video['height']}x{video['width']} (height x width)"
            )
        if isinstance(segm["counts"], list):  # uncompressed RLE -> compressed
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm
    if not isinstance(segm, list):
        raise DatasetFormatError(f"{json_file}: {where}: bad segmentation {segm!r:.80}")
    polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    if not polygons:
        problems.invalid_polygons += 1
        return None
    return polygons


def _frame_object(
    anno: dict, frame: int, video: dict, id_map: dict, json_file: str, problems: _Problems
) -> Optional[dict]:
    """The annotation of ``anno`` in one frame, or None where the object is absent."""
    segm, bbox = anno["segmentations"][frame], anno["bboxes"][frame]
    where = f"annotation {anno['id']} of video {video['id']}, frame {frame}"
    if not segm or not bbox:
        if segm or bbox:  # one without the other: skipped, as the published loader does
            problems.half_annotated_frames.append(where)
        return None
    segm = _frame_segmentation(segm, video, where, json_file, problems)
    if segm is None:
        return None
    return {
        "iscrowd": int(anno.get("iscrowd", 0)),
        "category_id": id_map[anno["category_id"]],
        "id": anno["id"],
        "bbox": [float(x) for x in bbox],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": segm,
    }


def _video_record(
    video: dict, annos: list[dict], image_root: str, id_map: dict, json_file: str, problems
) -> dict:
    length = video["length"]
    frames: list[list[dict]] = [[] for _ in range(length)]
    for anno in annos:
        for frame in range(length):
            obj = _frame_object(anno, frame, video, id_map, json_file, problems)
            if obj is not None:
                frames[frame].append(obj)
    return {
        "file_names": [os.path.join(image_root, name) for name in video["file_names"]],
        "height": int(video["height"]),
        "width": int(video["width"]),
        "length": int(length),
        "video_id": video["id"],
        "annotations": frames,
    }


def _warn(problems: _Problems, json_file: str) -> None:
    if problems.invalid_polygons:
        logger.warning(
            "%s: skipped %d frame annotations without a valid polygon (a polygon is a list of "
            "an even number >= 6 of coordinates)",
            json_file,
            problems.invalid_polygons,
        )
    if problems.half_annotated_frames:
        logger.warning(
            "%s: skipped %d frame annotations with a segmentation but no box or the reverse, "
            "first: %s",
            json_file,
            len(problems.half_annotated_frames),
            problems.half_annotated_frames[0],
        )


def load_ytvis_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None
) -> list[dict]:
    """Read a YouTube-VIS JSON into video dataset dicts, sorted by video id.

    Each dict: file_names (one path per frame), height, width, length, video_id, and
    annotations: one list per frame of that frame's objects, each with id (the track's
    annotation id), category_id (contiguous), iscrowd, bbox (XYWH_ABS), bbox_mode and
    segmentation (compressed RLE or polygons). A split without annotations (test) gives
    empty lists. Category ids map through ``MetadataCatalog.get(dataset_name)``'s
    ``thing_dataset_id_to_contiguous_id``; without a name or map they are numbered in id
    order. Errors name the file and the video or annotation.
    """
    data = load_json(json_file, "YouTube-VIS annotation file")
    require_keys(data, ("videos", "categories"), json_file, "the top level")
    require_dir(image_root, f"image root of {json_file}")
    meta = MetadataCatalog.get(dataset_name) if dataset_name else Metadata(name=json_file)
    id_map = thing_id_map(data["categories"], json_file, meta)

    for i, video in enumerate(_require_list(data, "videos", json_file)):
        _check_video(video, i, json_file)
    videos = {video["id"]: video for video in data["videos"]}
    annos_per_video: dict[Any, list[dict]] = {video_id: [] for video_id in videos}
    for i, anno in enumerate(_require_list(data, "annotations", json_file)):
        _check_annotation(anno, i, videos, id_map, json_file)
        annos_per_video[anno["video_id"]].append(anno)

    problems = _Problems()
    records = [
        _video_record(videos[vid], annos_per_video[vid], image_root, id_map, json_file, problems)
        for vid in sorted(videos)
    ]
    _warn(problems, json_file)
    require_files([f for r in records for f in r["file_names"]], "frame", json_file)
    logger.info("Loaded %d videos in YouTube-VIS format from %s", len(records), json_file)
    return records


def register_ytvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a YouTube-VIS-format dataset: ``DatasetCatalog.get(name)`` reads ``json_file``.

    ``metadata`` may be ``{}``: the class names are then taken from the file on first load.
    Sets evaluator_type "ytvis", json_file and image_root.
    """
    DatasetCatalog.register(name, lambda: load_ytvis_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata
    )
