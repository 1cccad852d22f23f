#!/usr/bin/env python
"""ADE20K SceneParsing (150 classes): shift labels to 0..149 with 255 for "other".

Reads   ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = other, 1..150)
Writes  ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from prepare_common import argument_parser, require_dir, run_parallel


def convert_label(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels 0..150 -> 0..149, with 0 ("other") becoming the ignore value 255."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"expected a (H, W) uint8 label map, got {label.dtype} {label.shape}")
    return label - np.uint8(1)  # uint8 arithmetic wraps 0 to 255


def convert_file(src: str, dst: str) -> None:
    label = np.asarray(Image.open(src))
    try:
        converted = convert_label(label)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from e
    Image.fromarray(converted).save(dst)


def main(root: str, workers: int) -> None:
    base = os.path.join(root, "ADEChallengeData2016")
    for split in ("training", "validation"):
        src_dir = os.path.join(base, "annotations", split)
        require_dir(src_dir, "download and unpack ADEChallengeData2016.zip into the datasets root")
        dst_dir = os.path.join(base, "annotations_detectron2", split)
        os.makedirs(dst_dir, exist_ok=True)
        names = sorted(n for n in os.listdir(src_dir) if n.endswith(".png"))
        jobs = [(os.path.join(src_dir, n), os.path.join(dst_dir, n)) for n in names]
        run_parallel(convert_file, jobs, workers, f"ADE20K {split}")


if __name__ == "__main__":
    args = argument_parser(__doc__).parse_args()
    main(args.root, args.workers)
