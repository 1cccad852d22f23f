#!/usr/bin/env python
"""PQ / SQ / RQ of COCO-panoptic-format predictions (panopticapi's evaluation.py, same flags).

    python tools/pq_compute.py --gt_json_file panoptic_val2017.json \
        --pred_json_file output/inference/panoptic_seg_predictions.json

Folders default to the JSON paths without ".json". Starts without importing torch.
"""

import argparse
import json
import logging

from mask2former.evaluation.panoptic_quality import pq_compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt_json_file", required=True, help="ground-truth panoptic JSON")
    parser.add_argument("--pred_json_file", required=True, help="predicted panoptic JSON")
    parser.add_argument("--gt_folder", default=None, help="ground-truth PNGs")
    parser.add_argument("--pred_folder", default=None, help="predicted PNGs")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--output", default=None, help="write All/Things/Stuff as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = pq_compute(
        args.gt_json_file, args.pred_json_file, args.gt_folder, args.pred_folder, args.workers
    )
    print(f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}")
    print("-" * 38)
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        print(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} "
            f"{r['n']:5d}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({k: results[k] for k in ("All", "Things", "Stuff")}, f)


if __name__ == "__main__":
    main()
