#!/usr/bin/env python
"""Check one's own dataset folder before training (layouts: datasets/README.md, "Your own
dataset"); exits 1 when there is a problem, after listing each with its file.

    python tools/check_dataset.py FOLDER [--train-split train] [--test-split val]

Reads every image, label map, panoptic PNG, instance JSON and mask once: unreadable files,
sizes that differ from the image's, label values that are neither a class id nor the ignore
label, RGB-coloured labels, unknown categories, missing and orphan files. Prints pixels and
instances per class, the ignored pixels, and the config overrides that train on the folder.
"""

import argparse
import os
import sys

from mask2former.data.datasets.folder import DatasetFolder
from mask2former.data.datasets.folder_check import SplitReport, check_folder
from mask2former.data.datasets.folder_registration import dataset_names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", help="the dataset folder")
    parser.add_argument("--train-split", default="train", help="split to train on (train)")
    parser.add_argument("--test-split", default="val", help="split to evaluate on (val)")
    return parser.parse_args(argv)


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def class_table(folder: DatasetFolder, report: SplitReport) -> list[str]:
    """One line per class: id, name, thing/stuff, pixels (share), instances."""
    lines = [f"  {'id':>3}  {'class':<20} {'kind':<5} {'pixels':>12} {'share':>7} {'instances':>9}"]
    for k, c in enumerate(folder.classes):
        pixels = "-" if report.pixels is None else str(int(report.pixels[k]))
        share = "-" if report.pixels is None else _percent(report.pixels[k], report.total_pixels)
        instances = "-" if report.instances is None or not c.isthing else str(report.instances[k])
        kind = "thing" if c.isthing else "stuff"
        lines.append(f"  {k:>3}  {c.name:<20} {kind:<5} {pixels:>12} {share:>7} {instances:>9}")
    if report.pixels is not None:
        ignored = report.ignored_pixels
        lines.append(
            f"  ignore label {folder.ignore_label}: "
            + (
                f"{ignored} pixels ({_percent(ignored, report.total_pixels)})"
                if ignored
                else "not present"
            )
        )
    return lines


def overrides(folder: DatasetFolder, train: str, test: str) -> str:
    """The config overrides that train on split ``train`` and evaluate on ``test``."""
    names = {s.name: dataset_names(folder, s) for s in folder.splits}
    if not names.get(train):
        return f"(no split {train!r} with annotations: pass --train-split)"
    train_name, task = next(iter(names[train].items()))
    opts = [
        f"DATASETS.FOLDERS '(\"{folder.root}\",)'",
        f"DATASETS.TRAIN '(\"{train_name}\",)'",
    ]
    if names.get(test):
        opts.append(f"DATASETS.TEST '(\"{next(iter(names[test]))}\",)'")
    opts.append(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {folder.num_classes(task)}")
    if task == "instance":  # the published instance configs read polygons only
        opts.append("INPUT.MASK_FORMAT bitmask")
    return " ".join(opts)


def main(args: argparse.Namespace) -> int:
    folder, reports, problems = check_folder(args.folder)
    if folder is not None:
        things = [c.name for c in folder.classes if c.isthing]
        print(f"{folder.root}: {len(folder.classes)} classes, things {things}")
        for report in reports:
            registered = ", ".join(dataset_names(folder, folder.split(report.name)))
            print(f"\nsplit {report.name}: {report.num_images} images; registers {registered}")
            if report.instances is not None:
                print(f"  (instances from {report.instances_source})")
            print("\n".join(class_table(folder, report)))
    if problems:
        print(f"\n{len(problems)} problem(s):")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print("\nno problems. Train with a published config plus:")
    print("  " + overrides(folder, args.train_split, args.test_split))
    test = next((s for s in folder.splits if s.name == args.test_split), None)
    if (
        test is not None
        and test.tasks()[:1] == ["instance"]
        and not os.path.isfile(test.instances_json)
    ):
        print(
            f"  (instance evaluation reads {test.instances_json}: run convert_dataset.py masks-to-coco)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
