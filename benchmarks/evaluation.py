"""Evaluation speed: the three evaluators per image, pq_compute on files, RLE encoding.

    PYTHONPATH=. python benchmarks/evaluation.py [--images 100] [--no-output-dir] [--pq-images 500]

1. Evaluators: ``COCOPanopticEvaluator`` + ``InstanceSegEvaluator`` + ``SemSegEvaluator`` as
   ``tools/train_net.py`` builds them for COCO panoptic (``output_dir`` set), on a synthetic
   COCO-panoptic-like dataset (benchmarks/_coco_panoptic_like.py: 133 classes, 640x480,
   ~20 segments per image) with model-shaped outputs (panoptic id map + segments_info, 100
   instance masks as float 0/1, (133, H, W) semantic scores): ``process()`` of every image
   + ``evaluate()``, per image, against detectron2's evaluators written plainly
   (benchmarks/_reference_evaluators.py) in the same run; the metrics must agree. The two
   reductions of the model's outputs that a GPU run does on the GPU (argmax over 133 score
   maps, 100 masks thresholded at 0.5: some 150 ms on one CPU thread) are done and timed
   here, before the evaluators, and the evaluators get their results (the argmax through
   ``ArgmaxTaken``, ours the thresholded masks; the reference takes float masks as detectron2
   does and never thresholds): the evaluators' own cost is measured directly, not as the
   difference of two large, noisy numbers. The totals are given with and without them.
2. ``pq_compute`` on files: ``tools/pq_compute.py`` against panopticapi's algorithm
   (benchmarks/_panopticapi_reference.py; panopticapi is not installable here), each as a
   fresh process (start-up counted) on the same generated 640x480 PNG + JSON pairs, with a
   process per CPU; the results must agree.
3. RLE encoding of 100 masks per image: ``encode_masks`` against the published per-mask
   ``pycocotools.mask.encode`` loop; the bytes must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import pycocotools.mask as mask_util
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _coco_panoptic_like import NUM_CLASSES, make_dataset, model_outputs  # noqa: E402
from _reference_evaluators import (  # noqa: E402
    ReferenceInstance,
    ReferencePanoptic,
    ReferenceSemantic,
)
from panoptic_reference import make_panoptic_set  # noqa: E402

from mask2former.evaluation import (  # noqa: E402
    COCOPanopticEvaluator,
    InstanceSegEvaluator,
    SemSegEvaluator,
    encode_masks,
)
from mask2former.structures import Instances  # noqa: E402

EVALUATORS = ("panoptic", "instance", "semantic")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn) -> np.ndarray:
    """[wall seconds, CPU seconds] of fn()."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return np.array([time.perf_counter() - start, _cpu_seconds() - cpu])


# ----------------------------------------------------------------------------- evaluators
def _suites(name: str, ours_dir: Optional[str], ref_dir: Optional[str]) -> dict[str, dict]:
    return {
        "ours": {
            "panoptic": COCOPanopticEvaluator(name, ours_dir, distributed=False),
            "instance": InstanceSegEvaluator(name, distributed=False, output_dir=ours_dir),
            "semantic": SemSegEvaluator(name, distributed=False, output_dir=ours_dir),
        },
        "reference": {
            "panoptic": ReferencePanoptic(name),
            "instance": ReferenceInstance(name, ref_dir),
            "semantic": ReferenceSemantic(name, ref_dir),
        },
    }


class ArgmaxTaken:
    """(C, H, W) semantic scores whose argmax over classes is already taken, as a GPU run
    takes it on the GPU: ``argmax(dim=0)`` returns the (H, W) labels."""

    def __init__(self, labels: torch.Tensor, shape: tuple[int, ...]):
        self._labels = labels
        self.shape = tuple(shape)
        self.ndim = len(self.shape)

    def argmax(self, dim: int) -> torch.Tensor:
        if dim != 0:
            raise ValueError(f"only the argmax over classes (dim 0) is taken, not dim {dim}")
        return self._labels


def _reduced_outputs(outputs: dict, times: dict) -> dict[str, dict]:
    """Each suite's outputs with the GPU-side reductions done (and timed) here."""
    scores, instances = outputs["sem_seg"], outputs["instances"]
    done: dict = {}
    times["argmax"] += _timed(lambda: done.update(labels=scores.argmax(dim=0)))
    times["threshold"] += _timed(lambda: done.update(masks=instances.pred_masks >= 0.5))
    thresholded = Instances(instances.image_size, **instances.get_fields())
    thresholded.pred_masks = done["masks"]
    semantic = ArgmaxTaken(done["labels"], scores.shape)
    return {
        "ours": {**outputs, "sem_seg": semantic, "instances": thresholded},
        "reference": {**outputs, "sem_seg": semantic},
    }


def _check_same_metrics(results: dict) -> str:
    ours, ref = results["ours"], results["reference"]
    pq, ap, miou = ours["panoptic"]["panoptic_seg"], ours["instance"]["segm"], ours["semantic"]
    assert abs(pq["PQ"] - ref["panoptic"]["PQ"]) < 1e-9, (pq["PQ"], ref["panoptic"]["PQ"])
    assert ap["AP"] == ref["instance"]["AP"], (ap["AP"], ref["instance"]["AP"])
    per_class = [v for k, v in ap.items() if k.startswith("AP-")]
    assert np.array_equal(per_class, ref["instance"]["AP-per-class"], equal_nan=True)
    assert abs(miou["sem_seg"]["mIoU"] - ref["semantic"]["mIoU"]) < 1e-9
    return f"PQ {pq['PQ']:.2f}, AP {ap['AP']:.2f}, mIoU {miou['sem_seg']['mIoU']:.2f}"


def bench_evaluators(num_images: int, output_dir: bool) -> tuple[dict, str]:
    """{(suite, evaluator, phase): [wall, CPU] seconds in all} and the agreed metrics."""
    times: dict = defaultdict(lambda: np.zeros(2))
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        dataset = make_dataset(os.path.join(root, "data"), num_images)
        print(f"generated {num_images} images in {time.perf_counter() - start:.1f} s")
        dirs = [os.path.join(root, d) for d in ("ours", "reference")]
        for d in dirs:
            os.makedirs(d)
        suites = _suites(dataset.name, *(dirs if output_dir else (None, None)))
        for evaluators in suites.values():
            for evaluator in evaluators.values():
                evaluator.reset()
        scores = torch.empty(NUM_CLASSES, dataset.height, dataset.width)
        for i in range(num_images):
            inputs = [dataset.inputs[i]]
            outputs = _reduced_outputs(model_outputs(dataset, i, scores), times)
            order = list(suites) if i % 2 == 0 else list(reversed(suites))  # fair caches
            for suite in order:
                for name, evaluator in suites[suite].items():
                    times[suite, name, "process"] += _timed(
                        lambda: evaluator.process(inputs, [outputs[suite]])
                    )
        results: dict = defaultdict(dict)
        for suite, evaluators in suites.items():
            for name, evaluator in evaluators.items():

                def run(suite=suite, name=name, evaluator=evaluator):
                    results[suite][name] = evaluator.evaluate()

                times[suite, name, "evaluate"] += _timed(run)
        dataset.remove()
    return times, _check_same_metrics(results)


def _evaluator_rows(times: dict, n: int) -> tuple[list[tuple], dict]:
    """Table rows (per image ms) and each suite's [wall, CPU] total less the reductions."""
    rows = [
        ("reduction (GPU side): sem_seg argmax over 133 classes", times["argmax"]),
        ("reduction (GPU side): 100 pred_masks >= 0.5", times["threshold"]),
    ]
    totals = {}
    for suite in ("ours", "reference"):
        total = np.zeros(2)
        for name in EVALUATORS:
            for phase in ("process", "evaluate"):
                t = times[suite, name, phase]
                rows.append((f"{suite}: {name} {phase}()", t))
                total += t
        rows.append((f"{suite}: all three, process() + evaluate()", total))
        # On a CPU: ours would threshold the float masks, the reference takes them as they are.
        reductions = times["argmax"] + (times["threshold"] if suite == "ours" else 0)
        rows.append((f"{suite}: all three with the reductions on a CPU", total + reductions))
        totals[suite] = total
    return [(name, 1000 * t / n) for name, t in rows], totals


# ----------------------------------------------------------------------------- pq files
def _run_command(args: list[str]) -> np.ndarray:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def run():
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    return _timed(run)[0]


def bench_pq_files(num_images: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each run (CPU time is not comparable: panopticapi never waits for its
    pool's processes, so their CPU time is not counted as its children's)."""
    timings: dict[str, list[float]] = {"ours": [], "reference": []}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        gt_json, pred_json, gt_dir, pred_dir = make_panoptic_set(
            root, num_images, seed=0, height=480, width=640, num_segments=20
        )
        print(f"generated {num_images} PNG pairs in {time.perf_counter() - start:.1f} s")
        files = ["--gt_json_file", gt_json, "--pred_json_file", pred_json]
        commands = {
            "ours": ["tools/pq_compute.py"],
            "reference": ["benchmarks/_panopticapi_reference.py"],
        }
        for _ in range(repeats):
            for name, command in commands.items():
                out = os.path.join(root, f"{name}.json")
                args = [sys.executable, *command, *files, "--output", out]
                timings[name].append(_run_command(args))
        ours, ref = (json.load(open(os.path.join(root, f"{n}.json"))) for n in commands)
    for group in ("All", "Things", "Stuff"):
        for m in ("pq", "sq", "rq"):
            assert abs(ours[group][m] - ref[group][m]) < 1e-9, (group, m, ours, ref)
    print(f"pq_compute: PQ {100 * ours['All']['pq']:.2f} (both implementations agree)")
    return timings


# ----------------------------------------------------------------------------- RLE
def _published_encode(masks: torch.Tensor) -> list[dict]:
    """The published evaluator's per-mask loop (detectron2 instances_to_coco_json)."""
    rles = [
        mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
        for mask in masks.numpy()
    ]
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def bench_rle(num_images: int, repeats: int) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as root:
        dataset = make_dataset(root, num_images)
        scores = torch.empty(NUM_CLASSES, dataset.height, dataset.width)
        masks = [
            model_outputs(dataset, i, scores)["instances"].pred_masks >= 0.5
            for i in range(num_images)
        ]
        dataset.remove()
    best = {}
    for name, fn in (("ours", encode_masks), ("published loop", _published_encode)):
        runs = [_timed(lambda: [fn(m) for m in masks]) for _ in range(repeats)]
        best[name] = min(runs, key=lambda t: t[0])
    assert [r["counts"] for m in masks for r in encode_masks(m)] == [
        r["counts"] for m in masks for r in _published_encode(m)
    ]
    return best


# ----------------------------------------------------------------------------- report
def _print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}\n| {'what':62s} | wall ms | CPU ms |")
    print(f"|{'-' * 64}|---------|--------|")
    for name, (wall, cpu) in rows:
        print(f"| {name:62s} | {wall:7.2f} | {cpu:6.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images for the evaluators")
    parser.add_argument(
        "--no-output-dir",
        action="store_true",
        help="evaluators without output_dir (train_net gives one: predictions are saved)",
    )
    parser.add_argument(
        "--pq-images", type=int, default=500, help="PNG pairs for pq_compute (0: skip)"
    )
    parser.add_argument(
        "--rle-images", type=int, default=20, help="images for RLE encoding (0: skip)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of pq_compute / RLE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")

    times, metrics = bench_evaluators(args.images, not args.no_output_dir)
    print(f"evaluators: {metrics} (ours and the reference agree)")
    rows, totals = _evaluator_rows(times, args.images)
    saved = "no output_dir" if args.no_output_dir else "output_dir set, predictions saved"
    _print_table(f"Evaluators, per image ({args.images} images, {saved})", rows)
    ratio = totals["reference"] / totals["ours"]
    print(
        f"evaluators (GPU-side reductions excluded): ours {ratio[0]:.1f}x faster (wall), "
        f"{ratio[1]:.1f}x less CPU"
    )

    if args.pq_images:
        pq = bench_pq_files(args.pq_images, args.repeats)
        medians = {k: float(np.median(v)) for k, v in pq.items()}
        print(
            f"\npq_compute on {args.pq_images} PNG pairs, a fresh process each, wall seconds of "
            f"{args.repeats} runs:\n| what | runs | median |\n|---|---|---|"
        )
        for name, label in (
            ("ours", "tools/pq_compute.py"),
            ("reference", "panopticapi's algorithm"),
        ):
            runs = ", ".join(f"{t:.2f}" for t in pq[name])
            print(f"| {name}: {label} | {runs} | {medians[name]:.2f} |")
        print(
            f"pq_compute: ours {medians['reference'] / medians['ours']:.2f}x faster (wall, medians)"
        )
    if args.rle_images:
        rle = bench_rle(args.rle_images, args.repeats)
        _print_table(
            f"RLE encoding of 100 masks, per image (best of {args.repeats})",
            [(k, 1000 * v / args.rle_images) for k, v in rle.items()],
        )
        ratio = rle["published loop"] / rle["ours"]
        print(f"RLE encoding: ours {ratio[0]:.1f}x faster (wall), {ratio[1]:.1f}x less CPU")


if __name__ == "__main__":
    main()
