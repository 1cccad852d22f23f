"""File checks, id look-ups and box helpers shared by the dataset loaders and writers; every
error names the file."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from ...structures import masks_to_boxes
from ...utils import file_io
from ..catalog import Metadata


class DatasetFormatError(ValueError):
    """An annotation file that cannot be read as the format it claims to be."""


def load_json(path: str, what: str = "annotation file") -> Any:
    """Parse the JSON file at ``path`` (a path or a URL the package's ``PathManager``
    resolves); a missing file raises FileNotFoundError, a malformed one DatasetFormatError,
    both naming it."""
    return file_io.load_json(path, what, error=DatasetFormatError)


def require_keys(obj: Mapping, keys: Iterable[str], path: str, where: str) -> None:
    """Raise if the JSON object ``obj`` (found at ``where`` inside ``path``) lacks a key."""
    if not isinstance(obj, Mapping):
        raise DatasetFormatError(
            f"{path}: {where} should be a JSON object, got {type(obj).__name__}"
        )
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetFormatError(f"{path}: {where} lacks key(s) {missing}; has {sorted(obj)}")


def require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found (expected a directory): {path}")


def require_files(paths: list[str], what: str, listed_in: str) -> None:
    """Raise FileNotFoundError naming the first of ``paths`` that does not exist.

    Lists each parent directory once instead of one ``stat`` per file, so checking the 118k
    images of COCO train costs a few directory reads.
    """
    listings: dict[str, set[str]] = {}
    missing = []
    for path in paths:
        parent, name = os.path.split(path)
        if parent not in listings:
            listings[parent] = set(os.listdir(parent)) if os.path.isdir(parent) else set()
        if name not in listings[parent]:
            missing.append(path)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} {what}(s) listed in {listed_in} do not exist, first: {missing[0]}"
        )


def thing_id_map(categories: list[dict], json_file: str, meta: Metadata) -> dict[int, int]:
    """The metadata's ``thing_dataset_id_to_contiguous_id``; derived from the file when unset.

    When the metadata has no map (a user's own dataset registered with ``{}``), categories are
    numbered in id order and ``thing_classes`` is set from their names, as detectron2 does.
    """
    id_map = meta.get("thing_dataset_id_to_contiguous_id")
    if id_map is not None:
        return id_map
    if not isinstance(categories, list):
        raise DatasetFormatError(
            f"{json_file}: 'categories' should be a list, got {type(categories).__name__}"
        )
    for i, cat in enumerate(categories):
        require_keys(cat, ("id", "name"), json_file, f"categories[{i}]")
    cats = sorted(categories, key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    meta.set(thing_classes=[c["name"] for c in cats], thing_dataset_id_to_contiguous_id=id_map)
    return id_map


def files_by_stem(root: str, ext: Union[str, Sequence[str]]) -> dict[str, str]:
    """Relative path without extension -> path, for every ``*.ext`` file under ``root``.

    ``ext`` may be several extensions (matched case-insensitively); two files differing only
    in their extension are an error naming both.
    """
    suffixes = tuple("." + e.lower() for e in ([ext] if isinstance(ext, str) else ext))
    found: dict[str, str] = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in suffixes:
                continue
            path = os.path.join(dirpath, name)
            key = os.path.relpath(os.path.join(dirpath, stem), root)
            if key in found:
                raise DatasetFormatError(
                    f"two files for {key!r} under {root}: {found[key]}, {path}"
                )
            found[key] = path
    return found


#: extensions of the images of a dataset folder (matched case-insensitively)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")


def images_by_stem(images_dir: str) -> dict[str, str]:
    """Relative path without extension -> path of every image under ``images_dir``, sorted."""
    require_dir(images_dir, "image directory")
    found = files_by_stem(images_dir, IMAGE_EXTENSIONS)
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {images_dir}")
    return dict(sorted(found.items()))


def contiguous_category(
    id_map: Mapping[int, int], category_id: int, json_file: str, image: str
) -> int:
    """Map a dataset category id to its contiguous id; an unknown id names file, image and id."""
    if category_id not in id_map:
        raise DatasetFormatError(
            f"{json_file}: image {image} has category id {category_id}, which is not in the "
            f"dataset's metadata (known ids: {sorted(id_map)})"
        )
    return id_map[category_id]


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight COCO box [x, y, width, height] of a non-empty (H, W) bool mask."""
    if not mask.any():
        raise ValueError("an empty mask has no bounding box")
    x0, y0, x1, y1 = masks_to_boxes(torch.from_numpy(np.ascontiguousarray(mask))[None])[0]
    return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]
