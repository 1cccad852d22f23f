"""One's own dataset in a folder: ``dataset.yaml`` names the classes and each split is a
sub-folder in one of four layouts (registered by :mod:`.folder_registration`)::

    mydata/
      dataset.yaml                          the classes (see below)
      train/                                a split: any sub-folder that holds images/
        images/<stem>.jpg                   images (.jpg .jpeg .png .bmp .tif .tiff .webp;
                                            sub-folders allowed)
        labels/<stem>.png                   (a) semantic: one class id per pixel
        instances.json                      (b) COCO instance JSON (file names under images/)
        panoptic.json, panoptic/<stem>.png  (c) COCO panoptic JSON and PNGs
        masks/<stem>/<class>_<k>.png        (d) one binary mask per instance
      val/
        ...

``dataset.yaml``::

    classes: [road, sky, car, person]   # label value k is classes[k]
    things: [car, person]               # classes with instances; "all": every class
    ignore_label: 255                   # pixels nothing learns from or scores (default 255)
    name: mydata                        # registered names start with it (default: folder name)
    palette:                            # only to convert RGB-coloured label PNGs
      road: [128, 64, 128]
    ignore_colors: [[0, 0, 0]]          # RGB colours that become ignore_label

Without ``classes``, they are read from the first ``panoptic.json`` (names and isthing) or
``instances.json`` (every class a thing), in category id order. Every JSON of the folder must
list the same classes (an instance JSON: the thing classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import yaml
from PIL import Image

from ...utils.visualizer import fallback_color
from .common import DatasetFormatError, load_json, require_keys

__all__ = [
    "SINGLE_CHANNEL_MODES",
    "SPEC_FILE",
    "TASKS",
    "DatasetFolder",
    "FolderClass",
    "Split",
    "find_splits",
    "label_mode",
    "open_folder",
    "rgb_labels_message",
    "write_spec",
]

SPEC_FILE = "dataset.yaml"
_SPEC_KEYS = ("name", "classes", "things", "ignore_label", "palette", "ignore_colors")
#: tasks in the order ``<name>_<split>`` prefers them
TASKS = ("panoptic", "instance", "sem_seg")
#: label PNG modes holding one class id per pixel (8-bit, palette indices, 16/32-bit)
SINGLE_CHANNEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")
Color = tuple[int, int, int]


@dataclass(frozen=True)
class FolderClass:
    name: str
    isthing: bool
    color: Color


@dataclass(frozen=True)
class Split:
    """One split sub-folder; the properties are the paths of the four layouts."""

    name: str
    path: str

    @property
    def images(self) -> str:
        return os.path.join(self.path, "images")

    @property
    def labels(self) -> str:
        return os.path.join(self.path, "labels")

    @property
    def instances_json(self) -> str:
        return os.path.join(self.path, "instances.json")

    @property
    def panoptic_json(self) -> str:
        return os.path.join(self.path, "panoptic.json")

    @property
    def panoptic(self) -> str:
        return os.path.join(self.path, "panoptic")

    @property
    def masks(self) -> str:
        return os.path.join(self.path, "masks")

    def tasks(self) -> list[str]:
        """The tasks the split's annotations serve, in :data:`TASKS` order."""
        found = {
            "panoptic": os.path.isfile(self.panoptic_json),
            "instance": os.path.isfile(self.instances_json) or os.path.isdir(self.masks),
            "sem_seg": os.path.isdir(self.labels),
        }
        return [task for task in TASKS if found[task]]


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset folder with its classes resolved (contiguous id = position in ``classes``)."""

    root: str
    name: str
    classes: tuple[FolderClass, ...]
    ignore_label: int
    splits: tuple[Split, ...]
    #: RGB colour -> class id (or ``ignore_label``), from ``palette`` and ``ignore_colors``
    palette: dict[Color, int] = field(default_factory=dict)
    #: JSON file -> its category ids in contiguous order (for the id maps of the metadata)
    category_ids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def thing_ids(self) -> list[int]:
        """Contiguous ids of the thing classes."""
        return [k for k, c in enumerate(self.classes) if c.isthing]

    def split(self, name: str) -> Split:
        for split in self.splits:
            if split.name == name:
                return split
        raise KeyError(f"{self.root} has no split {name!r}; splits: {self.split_names}")

    @property
    def split_names(self) -> list[str]:
        return [s.name for s in self.splits]

    def num_classes(self, task: str) -> int:
        """What MODEL.SEM_SEG_HEAD.NUM_CLASSES must be to train ``task`` on this folder."""
        return len(self.thing_ids) if task == "instance" else len(self.classes)


# ----------------------------------------------------------------------------- dataset.yaml
def _read_spec(root: str) -> dict[str, Any]:
    path = os.path.join(root, SPEC_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        try:
            spec = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise DatasetFormatError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(spec, dict):
        raise DatasetFormatError(f"{path}: expected a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise DatasetFormatError(f"{path}: unknown key(s) {unknown}; known: {list(_SPEC_KEYS)}")
    return spec


def _class_names(value: Any, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(f"{where}: classes must be a list of names, got {value!r}")
    duplicates = sorted({v for v in value if list(value).count(v) > 1})
    if duplicates or not value:
        raise DatasetFormatError(f"{where}: classes must be non-empty and unique: {duplicates}")
    return list(value)


def _thing_flags(names: list[str], things: Any, where: str) -> list[bool]:
    """``things`` (None: none, "all", or a list of class names) as one flag per class."""
    if things is None:
        return [False] * len(names)
    if things == "all":
        return [True] * len(names)
    if not isinstance(things, (list, tuple)):
        raise DatasetFormatError(f"{where}: things must be a list of class names or 'all'")
    unknown = [t for t in things if t not in names]
    if unknown:
        raise DatasetFormatError(f"{where}: things {unknown} are not in classes {names}")
    return [n in things for n in names]


def _color(value: Any, where: str) -> Color:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        raise DatasetFormatError(f"{where}: a colour is [R, G, B] in 0..255, got {value!r}")
    return (value[0], value[1], value[2])


def _palette(spec: dict, names: list[str], ignore_label: int, where: str) -> dict[Color, int]:
    palette: dict[Color, int] = {}
    entries = [
        (names.index(n) if n in names else None, n, c) for n, c in spec.get("palette", {}).items()
    ]
    entries += [(ignore_label, "ignore_colors", c) for c in spec.get("ignore_colors", [])]
    for class_id, label, value in entries:
        if class_id is None:
            raise DatasetFormatError(f"{where}: palette names {label!r}, not one of {names}")
        color = _color(value, f"{where}: palette entry {label!r}")
        if color in palette and palette[color] != class_id:
            raise DatasetFormatError(f"{where}: colour {list(color)} is given to two classes")
        palette[color] = class_id
    return palette


# ----------------------------------------------------------------------------- JSON categories
def _json_categories(path: str, kind: str) -> list[dict]:
    """The categories of a COCO JSON, sorted by id (the contiguous order)."""
    data = load_json(path, f"COCO {kind} annotation file")
    require_keys(data, ("categories",), path, "the top level")
    keys = ("id", "name", "isthing") if kind == "panoptic" else ("id", "name")
    for i, cat in enumerate(data["categories"]):
        require_keys(cat, keys, path, f"categories[{i}]")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids) or not ids:
        raise DatasetFormatError(f"{path}: category ids must be unique and non-empty: {ids}")
    return cats


def _check_categories(path: str, cats: list[dict], expected: list[FolderClass], source: str):
    names = [c["name"] for c in cats]
    if names != [c.name for c in expected]:
        raise DatasetFormatError(
            f"{path}: categories (in id order) {names} differ from the classes "
            f"{[c.name for c in expected]} of {source}"
        )
    if "isthing" in cats[0]:
        things = [c["name"] for c in cats if c["isthing"]]
        if things != [c.name for c in expected if c.isthing]:
            raise DatasetFormatError(
                f"{path}: thing categories {things} differ from the things "
                f"{[c.name for c in expected if c.isthing]} of {source}"
            )


# ----------------------------------------------------------------------------- opening a folder
def find_splits(root: str) -> tuple[Split, ...]:
    """Every sub-folder of ``root`` holding ``images/``, by name."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    splits = tuple(
        Split(name, os.path.join(root, name))
        for name in sorted(os.listdir(root))
        if os.path.isdir(os.path.join(root, name, "images"))
    )
    if not splits:
        raise DatasetFormatError(
            f"{root}: no split folder found (expected e.g. {root}/train/images/ and "
            f"{root}/val/images/, see datasets/README.md)"
        )
    return splits


def open_folder(
    root: str,
    *,
    classes: Optional[Sequence[str]] = None,
    things: Union[Sequence[str], str, None] = None,
    ignore_label: Optional[int] = None,
    name: Optional[str] = None,
) -> DatasetFolder:
    """Read ``root``'s ``dataset.yaml`` and JSON categories; the keyword arguments override
    the YAML's keys of the same name. Raises :class:`DatasetFormatError` naming the file when
    the classes of the YAML and of the JSON files disagree."""
    root = os.path.abspath(os.path.expanduser(root))
    splits = find_splits(root)
    spec = _read_spec(root)
    overrides = dict(classes=classes, things=things, ignore_label=ignore_label, name=name)
    spec.update({k: v for k, v in overrides.items() if v is not None})
    jsons = [(s.panoptic_json, "panoptic") for s in splits if os.path.isfile(s.panoptic_json)]
    jsons += [(s.instances_json, "instance") for s in splits if os.path.isfile(s.instances_json)]
    cats = {path: _json_categories(path, kind) for path, kind in jsons}
    folder_classes, source = _resolve_classes(root, spec, jsons, cats)
    for path, kind in jsons:
        expected = [c for c in folder_classes if c.isthing or kind == "panoptic"]
        _check_categories(path, cats[path], expected, source)
    ignore = spec.get("ignore_label", 255)
    if not isinstance(ignore, int) or not len(folder_classes) <= ignore <= 65535:
        raise DatasetFormatError(
            f"{os.path.join(root, SPEC_FILE)}: ignore_label must be an integer in {len(folder_classes)}..65535 (not a "
            f"class id), got {ignore!r}"
        )
    names = [c.name for c in folder_classes]
    return DatasetFolder(
        root=root,
        name=str(spec.get("name") or os.path.basename(root)),
        classes=tuple(folder_classes),
        ignore_label=ignore,
        splits=splits,
        palette=_palette(spec, names, ignore, os.path.join(root, SPEC_FILE)),
        category_ids={path: [c["id"] for c in c_list] for path, c_list in cats.items()},
    )


def write_spec(root: str, **spec: Any) -> DatasetFolder:
    """Write (or update) ``root``'s ``dataset.yaml`` with ``spec`` (classes, things,
    ignore_label, name; None keeps what is there) and return the folder it describes.

    Without classes anywhere, they are taken from the folder's JSON files; the YAML then lists
    them explicitly. Other keys of an existing YAML (palette, ignore_colors) are kept.
    """
    folder = open_folder(root, **spec)
    current = _read_spec(folder.root)
    current.update({k: v for k, v in spec.items() if v is not None})
    current.update(
        classes=folder.class_names,
        things=[c.name for c in folder.classes if c.isthing],
        ignore_label=folder.ignore_label,
    )
    ordered = {k: current[k] for k in _SPEC_KEYS if k in current}
    with open(os.path.join(folder.root, SPEC_FILE), "w") as f:
        yaml.safe_dump(ordered, f, sort_keys=False, default_flow_style=None)
    return folder


def _resolve_classes(
    root: str, spec: dict, jsons: list[tuple[str, str]], cats: dict[str, list[dict]]
) -> tuple[list[FolderClass], str]:
    """The folder's classes and where they come from: dataset.yaml, else the first JSON."""
    spec_file = os.path.join(root, SPEC_FILE)
    if "classes" in spec:
        names = _class_names(spec["classes"], spec_file)
        flags = _thing_flags(names, spec.get("things"), spec_file)
        colors: list[Optional[list]] = [None] * len(names)
        source = spec_file
    elif jsons:
        source, kind = jsons[0]
        names = [c["name"] for c in cats[source]]
        if "things" in spec:
            flags = _thing_flags(names, spec["things"], spec_file)
        else:
            flags = [bool(c["isthing"]) if kind == "panoptic" else True for c in cats[source]]
        colors = [c.get("color") for c in cats[source]]
    else:
        raise DatasetFormatError(
            f"{root}: no classes: write {spec_file} (classes: [...], things: [...]), e.g. with "
            f"python tools/convert_dataset.py describe {root} --classes a,b,c --things c"
        )
    palette = {n: c for n, c in (spec.get("palette") or {}).items()}
    return [
        FolderClass(
            name,
            isthing,
            (
                _color(palette[name], spec_file)
                if name in palette
                else (tuple(colors[k]) if colors[k] is not None else fallback_color(k))
            ),
        )
        for k, (name, isthing) in enumerate(zip(names, flags))
    ], source


# ----------------------------------------------------------------------------- label PNG mode
def rgb_labels_message(mode: str, root: str) -> str:
    """Why a label PNG of PIL mode ``mode`` (RGB, RGBA) is refused, and how to convert it."""
    return (
        f"{mode} image, but a label PNG must hold one class id per pixel (single-channel "
        f"8/16-bit or palette mode; value k is classes[k], ignore_label marks ignored pixels). "
        f"To convert colour-coded labels, give each class's colour in "
        f"{os.path.join(root, SPEC_FILE)} (palette: {{<class>: [R, G, B], ...}}, "
        f"ignore_colors: [[R, G, B], ...]) and run: python tools/convert_dataset.py rgb-to-ids "
        f"{root}"
    )


def label_mode(label_file: str) -> str:
    """The PIL mode of an image file, reading only its header."""
    with Image.open(label_file) as image:
        return image.mode
