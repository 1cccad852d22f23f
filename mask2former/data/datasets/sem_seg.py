"""Image + label-map pairs (ADE20K, COCO-Stuff, Mapillary, ADE20K-full 16-bit TIFF)."""

from __future__ import annotations

import logging
import os
from typing import Sequence, Union

from ..catalog import DatasetCatalog, MetadataCatalog
from .common import DatasetFormatError, files_by_stem, require_dir

logger = logging.getLogger(__name__)

__all__ = ["load_sem_seg", "register_sem_seg"]


def load_sem_seg(
    gt_root: str,
    image_root: str,
    gt_ext: str = "png",
    image_ext: Union[str, Sequence[str]] = "jpg",
) -> list[dict]:
    """Pair every image under ``image_root`` with the label file of the same relative name.

    ``image_ext`` may list several extensions (e.g. ``("jpg", "png")``).

    Returns dicts with file_name, sem_seg_file_name and image_id (the relative stem), sorted by
    name. Height and width are left to the reader of the image. Images without a label file
    and labels without an image are an error naming the first one.
    """
    require_dir(image_root, "image directory")
    require_dir(gt_root, "label directory")
    images = files_by_stem(image_root, image_ext)
    labels = files_by_stem(gt_root, gt_ext)
    if not images:
        raise FileNotFoundError(f"no *.{image_ext} images under {image_root}")
    for a, b, root_b, ext_b in (
        (images, labels, gt_root, gt_ext),
        (labels, images, image_root, image_ext),
    ):
        unmatched = sorted(set(a) - set(b))
        if unmatched:
            ext_b = ext_b if isinstance(ext_b, str) else "{" + ",".join(ext_b) + "}"
            raise DatasetFormatError(
                f"{len(unmatched)} of {len(a)} files have no counterpart; first: {a[unmatched[0]]} "
                f"has no {os.path.join(root_b, unmatched[0] + '.' + ext_b)}"
            )
    records = [
        {"file_name": images[stem], "sem_seg_file_name": labels[stem], "image_id": stem}
        for stem in sorted(images)
    ]
    logger.info("Loaded %d images with semantic labels from %s", len(records), image_root)
    return records


def register_sem_seg(
    name: str,
    image_root: str,
    gt_root: str,
    stuff_classes: Sequence[str],
    image_ext: str = "jpg",
    gt_ext: str = "png",
    ignore_label: int = 255,
    evaluator_type: str = "sem_seg",
    **metadata,
) -> None:
    """Register a dataset of images and label maps whose pixel values index ``stuff_classes``.

    Example::

        register_sem_seg("my_train", "data/img", "data/lbl", ["road", "car"], ignore_label=255)
    """
    DatasetCatalog.register(name, lambda: load_sem_seg(gt_root, image_root, gt_ext, image_ext))
    MetadataCatalog.get(name).set(
        image_root=image_root,
        sem_seg_root=gt_root,
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_label,
        evaluator_type=evaluator_type,
        **metadata,
    )
