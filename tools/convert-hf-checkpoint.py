#!/usr/bin/env python
"""Convert Hugging Face Mask2Former / MaskFormer checkpoints to ours and back.

    # transformers directory (config.json + model.safetensors) -> config.yaml + weights
    tools/convert-hf-checkpoint.py to-ours path/to/hf_model out_dir/

    # our config + weights -> transformers directory (save_pretrained layout)
    tools/convert-hf-checkpoint.py to-hf out_dir/config.yaml out_dir/model_final.safetensors \
        hf_out/ [--class-names names.json]

The logic is in ``mask2former.checkpoint.hf``.
"""

import argparse
import json
import logging
import sys

from mask2former.checkpoint.hf import (
    ConversionError,
    convert_hf_to_ours,
    convert_ours_to_hf,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="direction", required=True)
    to_ours = sub.add_parser("to-ours", help="transformers directory -> our config + weights")
    to_ours.add_argument("hf_dir")
    to_ours.add_argument("out_dir")
    to_hf = sub.add_parser("to-hf", help="our config + weights -> transformers directory")
    to_hf.add_argument("config_file")
    to_hf.add_argument("weights_file")
    to_hf.add_argument("out_dir")
    to_hf.add_argument(
        "--class-names",
        help="JSON list of category names (default: the weights file's metadata)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger = logging.getLogger("convert-hf-checkpoint")
    args = parse_args(argv)
    try:
        if args.direction == "to-ours":
            config_file, weights_file = convert_hf_to_ours(args.hf_dir, args.out_dir)
            logger.info("wrote %s and %s", config_file, weights_file)
        else:
            names = None
            if args.class_names:
                with open(args.class_names) as f:
                    names = json.load(f)
            out = convert_ours_to_hf(args.config_file, args.weights_file, args.out_dir, names)
            logger.info("wrote %s", out)
    except ConversionError as e:
        logger.error("conversion failed: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
