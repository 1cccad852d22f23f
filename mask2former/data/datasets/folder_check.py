"""Validation of a dataset folder (see :mod:`.folder`) before training.

:func:`check_folder` reads every file once and reports each problem with the file it is in:
unreadable images, label maps or masks whose size is not their image's, label values that are
neither a class id nor the ignore label, RGB-coloured labels, panoptic PNGs and JSON segments
that disagree, unknown categories, missing or orphan files. It also counts pixels and
instances per class, and the ignored pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ...utils.panoptic_png import rgb2id
from ..detection_utils import read_image
from .coco import load_coco_json
from .coco_panoptic import load_coco_panoptic_json
from .common import DatasetFormatError, files_by_stem, images_by_stem
from .folder import SINGLE_CHANNEL_MODES, DatasetFolder, Split, open_folder, rgb_labels_message
from .folder_registration import panoptic_metadata
from .instance_masks import mask_dirs, parse_mask_name, read_mask

__all__ = ["Problem", "SplitReport", "check_folder"]

#: what reading a user's file may raise (each becomes a Problem naming the file);
#: BadSampleError and DatasetFormatError are ValueErrors
_FILE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)
#: what decoding a malformed COCO segmentation may raise
_SEGMENTATION_ERRORS = (ValueError, TypeError, KeyError)


@dataclass(frozen=True)
class Problem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}" if self.path else self.what


@dataclass
class SplitReport:
    """What was found in one split: tasks, image count and per-class counts (contiguous ids)."""

    name: str
    tasks: list[str]
    num_images: int = 0
    #: pixels per class in the label maps (or the panoptic PNGs without labels/)
    pixels: Optional[np.ndarray] = None
    #: pixels equal to the ignore label (label maps) or void (panoptic PNGs)
    ignored_pixels: int = 0
    total_pixels: int = 0
    #: instances per class, from panoptic.json, instances.json or masks/ (first found)
    instances: Optional[np.ndarray] = None
    instances_source: str = ""
    problems: list[Problem] = field(default_factory=list)


def _problem(report: SplitReport, path: str, what: Any) -> None:
    report.problems.append(Problem(path, str(what)))


# ----------------------------------------------------------------------------- images
@dataclass(frozen=True)
class _Images:
    """The split's images: stem -> path, and path -> (height, width) of the readable ones
    (an unreadable image is reported once, and nothing about its annotations)."""

    paths: dict[str, str]
    sizes: dict[str, tuple[int, int]]

    def size(self, path: str, report: SplitReport, where: str) -> Optional[tuple[int, int]]:
        """The size of the image at ``path``; None (reported at ``where`` if it is not an
        image of the split) when there is none to compare with."""
        path = os.path.normpath(path)
        if path not in self.sizes and path not in self.paths.values():
            _problem(report, where, f"{path} is not an image under images/")
        return self.sizes.get(path)


def _check_images(split: Split, report: SplitReport) -> _Images:
    try:
        paths = {stem: os.path.normpath(p) for stem, p in images_by_stem(split.images).items()}
    except (OSError, DatasetFormatError) as e:
        _problem(report, split.images, e)
        return _Images({}, {})
    sizes = {}
    for path in paths.values():
        try:
            with Image.open(path) as image:
                image.load()
                sizes[path] = (image.height, image.width)
        except _FILE_ERRORS as e:
            _problem(report, path, f"cannot read the image ({e})")
    report.num_images = len(paths)
    return _Images(paths, sizes)


def _size_problem(what: str, shape: tuple, image: str, size: tuple[int, int]) -> Optional[str]:
    if tuple(shape[:2]) == size:
        return None
    return (
        f"{what} is {shape[1]}x{shape[0]} (width x height) but its image "
        f"{os.path.basename(image)} is {size[1]}x{size[0]}"
    )


# ----------------------------------------------------------------------------- (a) label maps
def _check_labels(folder: DatasetFolder, split: Split, images: _Images, report) -> None:
    report.pixels = np.zeros(len(folder.classes), np.int64)
    labels = files_by_stem(split.labels, "png")
    for stem in sorted(set(labels) - set(images.paths)):
        _problem(report, labels[stem], "label PNG without an image of the same name")
    for stem, image_path in images.paths.items():
        if stem not in labels:
            _problem(report, image_path, f"no label PNG {os.path.join(split.labels, stem)}.png")
        elif image_path in images.sizes:
            _check_label_map(folder, labels[stem], image_path, images.sizes[image_path], report)


def _check_label_map(folder: DatasetFolder, path: str, image: str, size, report) -> None:
    try:
        with Image.open(path) as label:
            mode = label.mode
        values = read_image(path) if mode in SINGLE_CHANNEL_MODES else None
    except _FILE_ERRORS as e:
        _problem(report, path, f"cannot read the label PNG ({e})")
        return
    if values is None:
        _problem(report, path, rgb_labels_message(mode, folder.root))
        return
    size_error = _size_problem("label map", values.shape, image, size)
    if size_error:
        _problem(report, path, size_error)
        return
    _count_label_values(
        path, values.astype(np.int64), len(folder.classes), folder.ignore_label, report
    )


def _count_label_values(path, values, num_classes: int, ignore: int, report: SplitReport) -> None:
    unique = np.unique(values)
    unknown = [int(v) for v in unique if v != ignore and not 0 <= v < num_classes]
    if unknown:
        _problem(
            report,
            path,
            f"label values {unknown[:10]} are neither class ids 0..{num_classes - 1} nor the "
            f"ignore label {ignore}",
        )
    known = values[(values >= 0) & (values < num_classes)]
    report.pixels += np.bincount(known.ravel(), minlength=num_classes)
    report.ignored_pixels += int((values == ignore).sum())
    report.total_pixels += values.size


# ----------------------------------------------------------------------------- (c) panoptic
def _check_panoptic(folder: DatasetFolder, split: Split, images: _Images, report) -> None:
    try:
        meta = panoptic_metadata(folder, split)
        records = load_coco_panoptic_json(split.panoptic_json, split.images, split.panoptic, meta)
    except (OSError, DatasetFormatError) as e:
        _problem(report, split.panoptic_json, e)
        return
    count_pixels = report.pixels is None  # the label maps count pixels when there are some
    if count_pixels:
        report.pixels = np.zeros(len(folder.classes), np.int64)
    report.instances = np.zeros(len(folder.classes), np.int64)
    report.instances_source = "panoptic.json"
    for record in records:
        png = record["pan_seg_file_name"]
        size = images.size(record["file_name"], report, split.panoptic_json)
        if size is None:
            continue
        try:
            ids = rgb2id(read_image(png, "RGB"))
        except _FILE_ERRORS as e:
            _problem(report, png, f"cannot read the panoptic PNG ({e})")
            continue
        size_error = _size_problem("panoptic PNG", ids.shape, record["file_name"], size)
        if size_error:
            _problem(report, png, size_error)
            continue
        _count_segments(png, ids, record["segments_info"], report, count_pixels)


def _count_segments(png, ids, segments_info, report: SplitReport, count_pixels: bool) -> None:
    present = set(np.unique(ids).tolist()) - {0}
    listed = {s["id"] for s in segments_info}
    if present - listed:
        missing = sorted(present - listed)[:10]
        _problem(report, png, f"segment ids {missing} are not in segments_info")
    if listed - present:
        _problem(report, png, f"segments_info ids {sorted(listed - present)[:10]} have no pixels")
    for seg in segments_info:
        if seg["isthing"] and not seg["iscrowd"] and seg["id"] in present:
            report.instances[seg["category_id"]] += 1
        if count_pixels:
            report.pixels[seg["category_id"]] += int((ids == seg["id"]).sum())
    if count_pixels:
        report.ignored_pixels += int((ids == 0).sum())
        report.total_pixels += ids.size


# ----------------------------------------------------------------------------- (b) instances
def _check_instances(folder: DatasetFolder, split: Split, images: _Images, report) -> None:
    try:
        records = load_coco_json(split.instances_json, split.images)
    except (OSError, DatasetFormatError) as e:
        _problem(report, split.instances_json, e)
        return
    counts = np.zeros(len(folder.classes), np.int64)
    for record in records:
        where = f"{split.instances_json}: image {os.path.basename(record['file_name'])}"
        size = images.size(record["file_name"], report, split.instances_json)
        if size is None:
            continue
        listed = (record["height"], record["width"])
        if listed != size:
            _problem(
                report,
                where,
                _size_problem("its size in the JSON", listed, record["file_name"], size),
            )
        for anno in record["annotations"]:
            problem = _segmentation_problem(anno.get("segmentation"), size)
            if problem:
                _problem(report, where, problem)
            counts[folder.thing_ids[anno["category_id"]]] += 1
    if report.instances is None:
        report.instances, report.instances_source = counts, "instances.json"


def _segmentation_problem(segm: Any, size: tuple[int, int]) -> Optional[str]:
    if segm is None:
        return "an annotation without a segmentation"
    try:
        if isinstance(segm, list):
            segm = mask_util.merge(mask_util.frPyObjects(segm, *size))
        mask = mask_util.decode(segm)
    except _SEGMENTATION_ERRORS as e:
        return f"a segmentation cannot be decoded ({e})"
    if mask.shape[:2] != size:
        return f"a segmentation is {mask.shape[1]}x{mask.shape[0]}, its image {size[1]}x{size[0]}"
    return None if mask.any() else "an annotation with an empty mask"


# ----------------------------------------------------------------------------- (d) masks
def _check_masks(folder: DatasetFolder, split: Split, images: _Images, report) -> None:
    thing_names = [folder.classes[k].name for k in folder.thing_ids]
    counts = np.zeros(len(folder.classes), np.int64)
    for stem, directory in sorted(mask_dirs(split.masks).items()):
        if stem not in images.paths:
            _problem(report, directory, "mask folder without an image of the same name")
            continue
        image = images.paths[stem]
        if image not in images.sizes:
            continue
        for name in sorted(n for n in os.listdir(directory) if n.lower().endswith(".png")):
            path = os.path.join(directory, name)
            problem = _mask_problem(path, thing_names, image, images.sizes[image])
            if problem:
                _problem(report, path, problem)
            else:
                counts[folder.class_names.index(parse_mask_name(path, thing_names))] += 1
    if report.instances is None:
        report.instances, report.instances_source = counts, "masks/"


def _mask_problem(path: str, thing_names: list[str], image: str, size) -> Optional[str]:
    try:
        parse_mask_name(path, thing_names)
        values = read_image(path)
    except DatasetFormatError as e:
        return str(e).split(": ", 1)[1]
    except _FILE_ERRORS as e:
        return f"cannot read the mask ({e})"
    size_error = _size_problem("mask", values.shape, image, size)
    if size_error:
        return size_error
    if values.ndim == 2 and len(np.unique(values)) > 2:
        distinct = np.unique(values)
        return f"not a binary mask: {len(distinct)} values {distinct[:6].tolist()}"
    return None if read_mask(path).any() else "the mask is empty"


# ----------------------------------------------------------------------------- entry point
def check_split(folder: DatasetFolder, split: Split) -> SplitReport:
    report = SplitReport(split.name, split.tasks())
    if not report.tasks:
        _problem(report, split.path, "no labels/, instances.json, panoptic.json or masks/")
    images = _check_images(split, report)
    if os.path.isdir(split.labels):
        _check_labels(folder, split, images, report)
    if os.path.isfile(split.panoptic_json):
        _check_panoptic(folder, split, images, report)
    if os.path.isfile(split.instances_json):
        _check_instances(folder, split, images, report)
    if os.path.isdir(split.masks):
        _check_masks(folder, split, images, report)
    return report


def check_folder(
    root: str, **spec: Any
) -> tuple[Optional[DatasetFolder], list[SplitReport], list[Problem]]:
    """(the folder, a report per split, every problem). A folder that cannot be opened (no
    classes, YAML and JSON classes disagreeing) gives None, no reports and that problem."""
    try:
        folder = open_folder(root, **spec)
    except (OSError, DatasetFormatError) as e:
        return None, [], [Problem("", str(e))]  # the message names the file
    reports = [check_split(folder, split) for split in folder.splits]
    return folder, reports, [p for r in reports for p in r.problems]
