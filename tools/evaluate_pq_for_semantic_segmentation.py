#!/usr/bin/env python
"""PQ of semantic segmentation predictions (sem_seg_predictions.json from SemSegEvaluator).

    python tools/evaluate_pq_for_semantic_segmentation.py \
        --dataset-name ade20k_sem_seg_val --json-file output/inference/sem_seg_predictions.json
"""

import argparse
import logging

import mask2former.data.datasets  # noqa: F401  (registers the builtin datasets)
from mask2former.evaluation.evaluator import log_results_table
from mask2former.evaluation.semantic_pq import semantic_pq
from mask2former.utils.file_io import load_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-name", default="ade20k_sem_seg_val", help="registered dataset")
    parser.add_argument("--json-file", required=True, help="sem_seg_predictions.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    predictions = load_json(args.json_file, "predictions JSON")
    log_results_table(semantic_pq(args.dataset_name, predictions))


if __name__ == "__main__":
    main()
