#!/usr/bin/env python
"""Convert a Swin Transformer release checkpoint to D2SwinTransformer key names (.pkl).

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth \
        swin_tiny_patch4_window7_224.pkl
"""

import argparse
import logging

from mask2former.checkpoint import convert_swin_release, convert_weights_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help='Swin release checkpoint ({"model": state_dict}, .pth)')
    parser.add_argument("output", help="output file (.pkl, .pth or .safetensors)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_weights_file(convert_swin_release, args.input, args.output, author="swin-release")


if __name__ == "__main__":
    main()
