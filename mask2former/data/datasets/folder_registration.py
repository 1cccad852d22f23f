"""Registration of dataset folders (see :mod:`.folder`) under names and metadata of the same
form as the builtin datasets; ``DATASETS.FOLDERS`` registers folders from the config.

Each split registers, for each layout it holds, ``<name>_<split>_panoptic`` (c),
``<name>_<split>_instance`` (b, else d) and ``<name>_<split>_sem_seg`` (a), and
``<name>_<split>`` as the first of these three. A panoptic dataset also names the split's
semantic labels (``sem_seg_root``) and instance JSON (``json_file``) when it has them, for
semantic and instance evaluation.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic, register_coco_panoptic_with_sem_seg
from .common import IMAGE_EXTENSIONS, DatasetFormatError
from .folder import (
    SINGLE_CHANNEL_MODES,
    SPEC_FILE,
    DatasetFolder,
    FolderClass,
    Split,
    label_mode,
    open_folder,
    rgb_labels_message,
)
from .instance_masks import load_instance_masks
from .sem_seg import load_sem_seg

logger = logging.getLogger(__name__)

__all__ = [
    "dataset_names",
    "instance_metadata",
    "panoptic_metadata",
    "register_folder",
    "register_folders",
    "unregister_folder",
]


def _load_semantic(folder: DatasetFolder, split: Split) -> list[dict]:
    records = load_sem_seg(split.labels, split.images, "png", IMAGE_EXTENSIONS)
    first = records[0]["sem_seg_file_name"]
    mode = label_mode(first)
    if mode not in SINGLE_CHANNEL_MODES:
        raise DatasetFormatError(f"{first}: {rgb_labels_message(mode, folder.root)}")
    return records


# ----------------------------------------------------------------------------- metadata
def _colors(classes: Sequence[FolderClass]) -> list[list[int]]:
    return [list(c.color) for c in classes]


def panoptic_metadata(folder: DatasetFolder, split: Split) -> dict[str, Any]:
    """Builtin-style panoptic metadata: full class lists, id maps from the split's JSON."""
    ids = folder.category_ids[split.panoptic_json]
    meta = {
        "thing_classes": folder.class_names,
        "thing_colors": _colors(folder.classes),
        "stuff_classes": folder.class_names,
        "stuff_colors": _colors(folder.classes),
        "thing_dataset_id_to_contiguous_id": {ids[k]: k for k in folder.thing_ids},
        "stuff_dataset_id_to_contiguous_id": {i: k for k, i in enumerate(ids)},
        "ignore_label": folder.ignore_label,
    }
    instance_ids = folder.category_ids.get(split.instances_json)
    if instance_ids is not None and instance_ids != [ids[k] for k in folder.thing_ids]:
        raise DatasetFormatError(
            f"{split.instances_json}: category ids {instance_ids} differ from the thing ids "
            f"{[ids[k] for k in folder.thing_ids]} of {split.panoptic_json}"
        )
    return meta


def instance_metadata(folder: DatasetFolder, split: Split) -> dict[str, Any]:
    """Builtin-style instance metadata: the thing classes, numbered 0..T-1.

    Category ids are the instance JSON's; without one (layout d) they are the class's
    position in ``classes`` + 1, as ``tools/convert_dataset.py masks-to-coco`` writes them.
    """
    things = [folder.classes[k] for k in folder.thing_ids]
    if not things:
        raise DatasetFormatError(
            f"{split.path}: instance annotations, but {folder.root}/{SPEC_FILE} names no thing "
            f"classes (things: [...] or things: all)"
        )
    ids = folder.category_ids.get(split.instances_json, [k + 1 for k in folder.thing_ids])
    return {
        "thing_classes": [c.name for c in things],
        "thing_colors": _colors(things),
        "thing_dataset_id_to_contiguous_id": {i: t for t, i in enumerate(ids)},
    }


# ----------------------------------------------------------------------------- registration
#: dataset name -> the folder it was registered from (registering a folder twice is a no-op)
_REGISTERED: dict[str, str] = {}


def _register_panoptic(name: str, folder: DatasetFolder, split: Split) -> None:
    meta = panoptic_metadata(folder, split)
    instances = split.instances_json if os.path.isfile(split.instances_json) else None
    args = (name, meta, split.images, split.panoptic, split.panoptic_json)
    if os.path.isdir(split.labels):
        register_coco_panoptic_with_sem_seg(*args, split.labels, instances)
    else:
        register_coco_panoptic(*args, instances)


def _register_instance(name: str, folder: DatasetFolder, split: Split) -> None:
    meta = instance_metadata(folder, split)
    if os.path.isfile(split.instances_json):
        register_coco_instances(name, meta, split.instances_json, split.images)
        return
    DatasetCatalog.register(
        name, lambda: load_instance_masks(split.masks, split.images, meta["thing_classes"])
    )
    # the COCO evaluator reads json_file: masks-to-coco writes it there
    MetadataCatalog.get(name).set(
        evaluator_type="coco", json_file=split.instances_json, image_root=split.images, **meta
    )


def _register_sem_seg(name: str, folder: DatasetFolder, split: Split) -> None:
    DatasetCatalog.register(name, lambda: _load_semantic(folder, split))
    MetadataCatalog.get(name).set(
        image_root=split.images,
        sem_seg_root=split.labels,
        stuff_classes=folder.class_names,
        stuff_colors=_colors(folder.classes),
        ignore_label=folder.ignore_label,
        evaluator_type="sem_seg",
    )


_REGISTER: dict[str, Callable[[str, DatasetFolder, Split], None]] = {
    "panoptic": _register_panoptic,
    "instance": _register_instance,
    "sem_seg": _register_sem_seg,
}


def dataset_names(folder: DatasetFolder, split: Split) -> dict[str, str]:
    """Registered name -> task, for one split (the plain ``<name>_<split>`` first)."""
    tasks = split.tasks()
    if not tasks:
        return {}
    base = f"{folder.name}_{split.name}"
    return {base: tasks[0], **{f"{base}_{task}": task for task in tasks}}


def _claim(name: str, root: str) -> bool:
    """True if ``name`` is free; False if this folder registered it already; else raise."""
    if _REGISTERED.get(name) == root:
        return False
    if name in DatasetCatalog:
        raise KeyError(
            f"dataset {name!r} of folder {root} is already registered"
            + (f" from {_REGISTERED[name]}" if name in _REGISTERED else "")
            + f": give the folder another name (name: in {SPEC_FILE})"
        )
    return True


def register_folder(root: str, **spec: Any) -> DatasetFolder:
    """Register every split of the dataset folder ``root`` (see the module docstring).

    ``spec`` overrides ``dataset.yaml``'s keys (classes, things, ignore_label, name), e.g.
    ``register_folder("data/mydata", classes=["road", "car"], things=["car"])``. Registering
    the same folder again does nothing; a name registered by something else is an error.
    Returns the opened folder; ``dataset_names(folder, split)`` lists what was registered.
    """
    folder = open_folder(root, **spec)
    registered = []
    for split in folder.splits:
        names = dataset_names(folder, split)
        if not names:
            logger.warning("%s: no labels/, instances.json, panoptic.json or masks/", split.path)
        for name, task in names.items():
            if _claim(name, folder.root):
                _REGISTER[task](name, folder, split)
                _REGISTERED[name] = folder.root
                registered.append(name)
    if registered:
        logger.info(
            "Registered %s from %s (%d classes, %d things)",
            ", ".join(registered),
            folder.root,
            len(folder.classes),
            len(folder.thing_ids),
        )
    return folder


def register_folders(roots: Sequence[str]) -> None:
    """Register each of ``roots`` (the config's ``DATASETS.FOLDERS``) that is not registered
    yet: called again (by ``default_setup``, then the trainer), it reads nothing."""
    done = set(_REGISTERED.values())
    for root in roots:
        if os.path.abspath(os.path.expanduser(root)) not in done:
            register_folder(root)


def unregister_folder(root: str) -> list[str]:
    """Remove every dataset registered from ``root`` from both catalogs (to register it again
    after its dataset.yaml changed); returns their names."""
    root = os.path.abspath(os.path.expanduser(root))
    names = [name for name, source in _REGISTERED.items() if source == root]
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        del _REGISTERED[name]
    return names
