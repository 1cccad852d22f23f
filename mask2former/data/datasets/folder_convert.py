"""Conversions between the layouts of a dataset folder (see :mod:`.folder`):

- semantic label PNGs -> COCO panoptic (``panoptic.json`` + ``panoptic/``) and COCO instance
  (``instances.json``): stuff classes one segment per class, thing classes one segment per
  connected component (``scipy.ndimage.label``);
- per-instance mask PNGs -> COCO instance JSON (RLE or polygons);
- RGB-coloured label PNGs -> class-id label PNGs, through the ``palette`` of ``dataset.yaml``.

The written JSONs give class ``k`` (its position in ``classes``) the category id ``k + 1`` and
number images by name order, so every JSON of a folder agrees.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from ...utils.file_io import save_json
from ...utils.panoptic_png import id2rgb
from ..detection_utils import read_image
from .common import IMAGE_EXTENSIONS, DatasetFormatError, bbox_xywh, files_by_stem
from .folder import (
    SINGLE_CHANNEL_MODES,
    DatasetFolder,
    Split,
    label_mode,
    open_folder,
    rgb_labels_message,
)
from .instance_masks import encode_mask, image_size, masks_to_coco
from .sem_seg import load_sem_seg

logger = logging.getLogger(__name__)

__all__ = [
    "categories",
    "convert_masks_folder",
    "convert_rgb_folder",
    "convert_semantic_folder",
    "rgb_to_ids",
    "semantic_to_panoptic",
]

#: scipy.ndimage.label structures: 4- or 8-connected components
_STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), bool)}


def categories(folder: DatasetFolder, things_only: bool = False) -> list[dict]:
    """COCO categories of the folder's classes: id = contiguous id + 1."""
    return [
        {"id": k + 1, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
        for k, c in enumerate(folder.classes)
        if c.isthing or not things_only
    ]


# ----------------------------------------------------------------------------- semantic -> panoptic
def semantic_to_panoptic(
    labels: np.ndarray,
    thing_ids: Sequence[int],
    num_classes: int,
    ignore_label: int,
    connectivity: int = 8,
) -> tuple[np.ndarray, list[dict]]:
    """Split a label map into panoptic segments.

    Args:
        labels: (H, W) integer class ids in [0, num_classes), or ``ignore_label``.
        thing_ids: classes split into instances by connected components; the others give
            one segment per class.
        connectivity: 4 or 8, the neighbourhood of a connected component.
    Returns:
        (H, W) int64 segment ids (0 where ignored) and, per segment 1..S, a dict with id,
        category_id (the class id), iscrowd 0, area and bbox (XYWH).
    Raises:
        ValueError: a label value neither a class id nor ``ignore_label``.
    """
    values = np.unique(labels)
    unknown = [int(v) for v in values if v != ignore_label and not 0 <= v < num_classes]
    if unknown:
        raise ValueError(
            f"label values {unknown[:10]} are neither class ids 0..{num_classes - 1} nor the "
            f"ignore label {ignore_label}"
        )
    segment_ids = np.zeros(labels.shape, np.int64)
    segments: list[dict] = []
    for class_id in (int(v) for v in values if v != ignore_label):
        mask = labels == class_id
        if class_id in thing_ids:
            components, count = ndimage.label(mask, structure=_STRUCTURES[connectivity])
            parts = [components == j for j in range(1, count + 1)]
        else:
            parts = [mask]
        for part in parts:
            segments.append(
                {
                    "id": len(segments) + 1,
                    "category_id": class_id,
                    "iscrowd": 0,
                    "area": int(part.sum()),
                    "bbox": bbox_xywh(part),
                }
            )
            segment_ids[part] = len(segments)
    return segment_ids, segments


def _read_labels(path: str, folder: DatasetFolder, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int64 class ids of a label PNG; RGB or of another size than its image: error."""
    mode = label_mode(path)
    if mode not in SINGLE_CHANNEL_MODES:
        raise DatasetFormatError(f"{path}: {rgb_labels_message(mode, folder.root)}")
    labels = read_image(path).astype(np.int64)
    if labels.shape != size:
        raise DatasetFormatError(
            f"{path}: label map is {labels.shape[1]}x{labels.shape[0]} (width x height) but its "
            f"image is {size[1]}x{size[0]}"
        )
    return labels


def _image_to_panoptic(
    record: dict, image_id: int, folder: DatasetFolder, split: Split, connectivity: int
) -> tuple[dict, dict, list[dict]]:
    """Write the panoptic PNG of one label map; return its COCO image entry, its panoptic
    annotation and the COCO instance annotations of its things (ids numbered from 1)."""
    height, width = image_size(record["file_name"])
    labels = _read_labels(record["sem_seg_file_name"], folder, (height, width))
    try:
        segment_ids, segments = semantic_to_panoptic(
            labels, folder.thing_ids, len(folder.classes), folder.ignore_label, connectivity
        )
    except ValueError as e:
        raise DatasetFormatError(f"{record['sem_seg_file_name']}: {e}") from e
    png_name = record["image_id"] + ".png"
    png_path = os.path.join(split.panoptic, png_name)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    Image.fromarray(id2rgb(segment_ids)).save(png_path, format="PNG")
    image = {
        "id": image_id,
        "file_name": os.path.relpath(record["file_name"], split.images),
        "height": height,
        "width": width,
    }
    instances = [
        {**seg, "image_id": image_id, "segmentation": encode_mask(segment_ids == seg["id"])}
        for seg in segments
        if seg["category_id"] in folder.thing_ids
    ]
    for seg in segments + instances:  # class id -> category id
        seg["category_id"] += 1
    annotation = {"image_id": image_id, "file_name": png_name, "segments_info": segments}
    return image, annotation, instances


def _convert_semantic_split(folder: DatasetFolder, split: Split, connectivity: int) -> int:
    records = load_sem_seg(split.labels, split.images, "png", IMAGE_EXTENSIONS)
    os.makedirs(split.panoptic, exist_ok=True)
    images, pan_annotations, instances = [], [], []
    for image_id, record in enumerate(records):
        image, annotation, things = _image_to_panoptic(
            record, image_id, folder, split, connectivity
        )
        images.append(image)
        pan_annotations.append(annotation)
        instances += [{**thing, "id": len(instances) + k + 1} for k, thing in enumerate(things)]
    save_json(
        {"images": images, "annotations": pan_annotations, "categories": categories(folder)},
        split.panoptic_json,
    )
    if folder.thing_ids:
        things_only = categories(folder, things_only=True)
        save_json(
            {"images": images, "annotations": instances, "categories": things_only},
            split.instances_json,
        )
    return len(records)


def _require_new(paths: list[str], overwrite: bool) -> None:
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist: pass --overwrite (overwrite=True) to replace"
        )


def convert_semantic_folder(
    root: str,
    splits: Optional[Sequence[str]] = None,
    connectivity: int = 8,
    overwrite: bool = False,
    **spec,
) -> dict[str, int]:
    """Write ``panoptic.json``, ``panoptic/`` and (with thing classes) ``instances.json``
    beside ``labels/`` in each split (or ``splits``); returns images converted per split.
    ``spec`` overrides dataset.yaml's keys (classes, things, ignore_label)."""
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    folder = open_folder(root, **spec)
    chosen = [folder.split(s) for s in splits] if splits else folder.splits
    chosen = [s for s in chosen if os.path.isdir(s.labels)]
    if not chosen:
        raise DatasetFormatError(f"{folder.root}: no split has a labels/ folder")
    for split in chosen:
        outputs = [split.panoptic_json, split.panoptic]
        _require_new(outputs + ([split.instances_json] if folder.thing_ids else []), overwrite)
    done = {}
    for split in chosen:
        if overwrite and os.path.isdir(split.panoptic):
            shutil.rmtree(split.panoptic)
        done[split.name] = _convert_semantic_split(folder, split, connectivity)
        logger.info("%s: %d label maps -> %s", split.path, done[split.name], split.panoptic_json)
    return done


# ----------------------------------------------------------------------------- masks -> COCO
def convert_masks_folder(
    root: str,
    splits: Optional[Sequence[str]] = None,
    polygons: bool = False,
    overwrite: bool = False,
    **spec,
) -> dict[str, int]:
    """Write ``instances.json`` from ``masks/`` in each split (or ``splits``); returns the
    number of instances per split."""
    folder = open_folder(root, **spec)
    chosen = [folder.split(s) for s in splits] if splits else folder.splits
    chosen = [s for s in chosen if os.path.isdir(s.masks)]
    if not chosen:
        raise DatasetFormatError(f"{folder.root}: no split has a masks/ folder")
    if not folder.thing_ids:
        raise DatasetFormatError(
            f"{folder.root}: no thing classes: add things: [...] (or things: all) to dataset.yaml"
        )
    _require_new([s.instances_json for s in chosen], overwrite)
    done = {}
    for split in chosen:
        coco = masks_to_coco(split.masks, split.images, categories(folder, True), polygons)
        save_json(coco, split.instances_json)
        done[split.name] = len(coco["annotations"])
        logger.info("%s: %d instances -> %s", split.masks, done[split.name], split.instances_json)
    return done


# ----------------------------------------------------------------------------- RGB -> ids
def rgb_to_ids(rgb: np.ndarray, palette: dict[tuple[int, int, int], int]) -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) int64 class ids through ``palette`` (colour -> id).

    Raises ValueError listing colours the palette lacks, with their pixel counts.
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: v for (r, g, b), v in palette.items()}
    found, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    unknown = [(int(c), int(n)) for c, n in zip(found, counts) if int(c) not in table]
    if unknown:
        listed = ", ".join(f"{[c >> 16, (c >> 8) & 255, c & 255]} ({n} px)" for c, n in unknown[:5])
        raise ValueError(f"{len(unknown)} colour(s) not in the palette: {listed}")
    return np.array([table[int(c)] for c in found], np.int64)[inverse].reshape(codes.shape)


def _write_ids(labels: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if labels.max(initial=0) < 256:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path, format="PNG")
    else:
        Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG")


def _convert_rgb_split(folder: DatasetFolder, split: Split) -> int:
    source = os.path.join(split.path, "labels_rgb")
    if not os.path.isdir(source):
        os.rename(split.labels, source)  # keep the originals
    count = 0
    for stem, path in files_by_stem(source, "png").items():
        target = os.path.join(split.labels, stem + ".png")
        if label_mode(path) in SINGLE_CHANNEL_MODES:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
            continue
        try:
            labels = rgb_to_ids(read_image(path, "RGB"), folder.palette)
        except ValueError as e:
            raise DatasetFormatError(f"{path}: {e}; add them to palette or ignore_colors") from e
        _write_ids(labels, target)
        count += 1
    return count


def convert_rgb_folder(root: str, splits: Optional[Sequence[str]] = None, **spec) -> dict[str, int]:
    """Turn RGB-coloured ``labels/`` into class-id PNGs with dataset.yaml's ``palette``.

    The originals move to ``labels_rgb/`` (read from there when it exists already); labels
    already single-channel are copied as they are. Returns RGB files converted per split.
    """
    folder = open_folder(root, **spec)
    if not folder.palette:
        raise DatasetFormatError(
            f"{folder.root}/dataset.yaml has no palette: add palette: {{<class>: [R, G, B]}} "
            f"(and ignore_colors: [[R, G, B]] for ignored pixels)"
        )
    chosen = [folder.split(s) for s in splits] if splits else folder.splits
    chosen = [
        s
        for s in chosen
        if os.path.isdir(s.labels) or os.path.isdir(os.path.join(s.path, "labels_rgb"))
    ]
    if not chosen:
        raise DatasetFormatError(f"{folder.root}: no split has a labels/ folder")
    done = {split.name: _convert_rgb_split(folder, split) for split in chosen}
    logger.info("RGB label PNGs converted to class ids: %s", done)
    return done
