#!/usr/bin/env python
"""Convert a torchvision ResNet checkpoint to detectron2 key names (a backbone-only .pkl).

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Use the output with MODEL.WEIGHTS and MODEL.RESNETS.STRIDE_IN_1X1 False, as the published
configs do.
"""

import argparse
import logging

from mask2former.checkpoint import convert_torchvision_resnet, convert_weights_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="torchvision ResNet state dict (.pth)")
    parser.add_argument("output", help="output file (.pkl, .pth or .safetensors)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_weights_file(convert_torchvision_resnet, args.input, args.output, author="torchvision")


if __name__ == "__main__":
    main()
