#!/usr/bin/env python
"""Describe and convert one's own dataset folder (layouts: datasets/README.md, "Your own
dataset").

    # write FOLDER/dataset.yaml: the classes (label value k is the k-th), which are things
    python tools/convert_dataset.py describe FOLDER --classes road,sky,car,person --things car,person
    # semantic label PNGs -> COCO panoptic (panoptic.json, panoptic/) + instances.json
    python tools/convert_dataset.py sem-to-panoptic FOLDER [--connectivity 8] [--split train]
    # masks/<stem>/<class>_<k>.png -> instances.json (RLE; --polygons for polygons)
    python tools/convert_dataset.py masks-to-coco FOLDER [--polygons]
    # RGB-coloured labels/ -> class ids, through dataset.yaml's palette (originals: labels_rgb/)
    python tools/convert_dataset.py rgb-to-ids FOLDER

Then check the folder with ``python tools/check_dataset.py FOLDER``.
"""

import argparse
import logging
import sys

from mask2former.data.datasets.common import DatasetFormatError
from mask2former.data.datasets.folder import write_spec
from mask2former.data.datasets.folder_convert import (
    convert_masks_folder,
    convert_rgb_folder,
    convert_semantic_folder,
)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _things(text: str):
    return "all" if text == "all" else _names(text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    describe = commands.add_parser("describe", help="write or update FOLDER/dataset.yaml")
    describe.add_argument("--classes", type=_names, help="comma-separated, in label-value order")
    describe.add_argument("--things", type=_things, help="comma-separated thing classes, or all")
    describe.add_argument("--ignore-label", type=int, help="label of ignored pixels (255)")
    describe.add_argument("--name", help="prefix of the registered names (the folder's name)")
    pan = commands.add_parser("sem-to-panoptic", help="labels/ -> panoptic.json + instances.json")
    pan.add_argument("--connectivity", type=int, choices=(4, 8), default=8)
    pan.add_argument("--things", type=_things, help="override dataset.yaml's things")
    masks = commands.add_parser("masks-to-coco", help="masks/ -> instances.json")
    masks.add_argument("--polygons", action="store_true", help="polygons instead of RLE")
    commands.add_parser("rgb-to-ids", help="RGB-coloured labels/ -> class-id labels/")
    for command in (pan, masks):
        command.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    for command in commands.choices.values():
        command.add_argument("folder", help="the dataset folder")
        if command is not describe:
            command.add_argument("--split", action="append", help="only this split (repeatable)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if args.command == "describe":
        folder = write_spec(
            args.folder,
            classes=args.classes,
            things=args.things,
            ignore_label=args.ignore_label,
            name=args.name,
        )
        print(
            f"wrote {folder.root}/dataset.yaml: {len(folder.classes)} classes {folder.class_names}"
        )
        print(f"next: python tools/check_dataset.py {args.folder}")
    elif args.command == "sem-to-panoptic":
        done = convert_semantic_folder(
            args.folder, args.split, args.connectivity, args.overwrite, things=args.things
        )
        print(f"converted label maps to panoptic: {done} (images per split)")
    elif args.command == "masks-to-coco":
        done = convert_masks_folder(args.folder, args.split, args.polygons, args.overwrite)
        print(f"wrote instances.json: {done} (instances per split)")
    else:
        done = convert_rgb_folder(args.folder, args.split)
        print(f"converted RGB label PNGs to class ids: {done} (files per split)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main(parse_args())
    except (DatasetFormatError, FileNotFoundError, FileExistsError, KeyError) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")
