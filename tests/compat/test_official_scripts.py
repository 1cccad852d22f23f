"""Scripts written for official Mask2Former, with ``detectron2`` replaced by ``mask2former``
in their imports, run on the shapes quick-start config (shrunk to a few iterations).

``official_train_net.py`` and ``official_demo/`` are written in the shape of the official
``train_net.py``, ``demo/demo.py`` and ``demo/predictor.py`` (same imports, same calls).
Training and the demo run as subprocesses (``__main__``, ``launch``, multiprocessing);
evaluation-only runs call the script's ``main`` in-process to check the returned results.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"
TRAIN_NET = REPO / "tests" / "compat" / "official_train_net.py"
DEMO = REPO / "tests" / "compat" / "official_demo" / "demo.py"
OUR_TRAIN_NET = REPO / "tools" / "train_net.py"

SHRINK = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
SEMANTIC = [
    "DATASETS.TRAIN", "('shapes_train_sem_seg',)",
    "DATASETS.TEST", "('shapes_val_sem_seg',)",
    "INPUT.DATASET_MAPPER_NAME", "mask_former_semantic",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False",
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False",
]  # fmt: skip
# A model trained for three iterations finds no panoptic segment yet; its semantic map and
# its top-k instances always cover something, and the demo draws both when there is no
# panoptic output.
DRAW_ALL = ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False"]
TTA = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "128"]

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_range(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 100.0


def _eval_only(script: Path, out: Path, weights: Path, *opts: str) -> dict:
    """The script's ``main`` on ``--eval-only``, in this process; returns its results."""
    module = _load(script, f"script_{script.stem}_{out.name}")
    argv = ["--config-file", str(CONFIG), "--eval-only", "MODEL.WEIGHTS", str(weights)]
    args = module.default_argument_parser().parse_args(argv + ["OUTPUT_DIR", str(out), *opts])
    os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))
    return module.main(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """OUTPUT_DIR of three training iterations with the official-style script."""
    out = tmp_path_factory.mktemp("official_train")
    opts = ["SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "1"]
    opts += ["OUTPUT_DIR", str(out)]
    _run([str(TRAIN_NET), "--config-file", str(CONFIG), *SHRINK, *opts])
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def test_training_runs_with_the_official_trainer(trained):
    lines = _metrics(trained)
    assert lines[0]["iteration"] == 2 and math.isfinite(lines[0]["total_loss"])
    final = lines[-1]
    for key in ("panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"):
        assert _in_range(final[key]), (key, final)
    checkpoint = torch.load(trained / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 2
    assert checkpoint["scheduler"]["max_iters"] == 3 and checkpoint["scheduler"]["power"] == 0.9
    assert len(checkpoint["optimizer"]["param_groups"]) > 100  # one group per parameter
    # projects.deeplab's WarmupPolyLR set the LR of iteration 1 (BASE_LR 0.001, warm-up
    # factor 0.01 over 2 iterations): 0.001 * (0.01 * 0.5 + 0.5) * (1 - 1/3) ** 0.9
    first = torch.load(trained / "model_0000000.pth", weights_only=True)
    lrs = [group["lr"] for group in first["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([0.001 * 0.505 * (2 / 3) ** 0.9] * len(lrs))
    assert (trained / "config.yaml").is_file()
    log = (trained / "log.txt").read_text()
    assert log.count("Full config saved to") == 1, "setup_logger added no second handler"


def test_eval_only_gives_the_final_results_of_training(trained, tmp_path):
    final = _metrics(trained)[-1]
    pq = final["panoptic_seg/PQ"]
    expected = f"[['panoptic_seg', 'PQ', {pq!r}, 1e-4]]"
    results = _eval_only(
        TRAIN_NET, tmp_path, trained / "model_final.pth", "TEST.EXPECTED_RESULTS", expected
    )
    assert set(results) == {"panoptic_seg", "segm", "sem_seg"}
    assert results["panoptic_seg"]["PQ"] == pytest.approx(pq, abs=1e-6)
    assert results["segm"]["AP"] == pytest.approx(final["segm/AP"], abs=1e-6, nan_ok=True)
    assert results["sem_seg"]["mIoU"] == pytest.approx(final["sem_seg/mIoU"], abs=1e-6)
    folder = tmp_path / "inference"  # the official script's output folder
    assert (folder / "coco_instances_results.json").is_file()
    assert (folder / "sem_seg_predictions.json").is_file()


def test_eval_only_raises_when_expected_results_are_not_met(trained, tmp_path):
    with pytest.raises(AssertionError, match="panoptic_seg/PQ: expected 123"):
        _eval_only(
            TRAIN_NET,
            tmp_path,
            trained / "model_final.pth",
            "TEST.EXPECTED_RESULTS",
            "[['panoptic_seg', 'PQ', 123.0, 0.1]]",
        )


def test_tta_eval_only_on_a_semantic_config(trained, tmp_path):
    results = _eval_only(TRAIN_NET, tmp_path, trained / "model_final.pth", *SEMANTIC, *TTA)
    assert set(results) == {"sem_seg", "sem_seg_TTA"}
    assert _in_range(results["sem_seg"]["mIoU"]) and _in_range(results["sem_seg_TTA"]["mIoU"])
    assert (tmp_path / "inference_TTA" / "sem_seg_predictions.json").is_file()


def test_our_train_net_adds_tta_results_and_keeps_only_semantic_evaluators(trained, tmp_path):
    """On a panoptic dataset, TTA (which gives only "sem_seg") is scored by the semantic
    evaluator alone; the plain evaluation still reports PQ and AP."""
    results = _eval_only(OUR_TRAIN_NET, tmp_path, trained / "model_final.pth", *TTA)
    assert set(results) == {"panoptic_seg", "segm", "sem_seg", "sem_seg_TTA"}
    assert _in_range(results["sem_seg_TTA"]["mIoU"])
    tta_folder = tmp_path / "inference_TTA" / "shapes_val_panoptic_with_sem_seg"
    assert (tta_folder / "sem_seg_predictions.json").is_file()
    assert not (tta_folder / "coco_instances_results.json").exists()


def _shapes_images(tmp_path: Path) -> list[Path]:
    from mask2former.data import DatasetCatalog

    records = DatasetCatalog.get("shapes_val_panoptic_with_sem_seg")[:3]
    paths = []
    for k, record in enumerate(records):
        image = cv2.imread(record["file_name"])
        path = tmp_path / (f"shape{k}.png" if k == 0 else f"shape{k}.jpg")
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def _expected_drawing(weights: Path, bgr: np.ndarray) -> np.ndarray:
    """The demo's drawing of ``bgr``, computed here with the same public API."""
    from mask2former.config import get_cfg
    from mask2former.engine.defaults import DefaultPredictor
    from mask2former.utils.visualizer import Visualizer

    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.WEIGHTS", str(weights), *DRAW_ALL])
    predictor = DefaultPredictor(cfg)
    predictions = predictor(bgr)
    assert "panoptic_seg" not in predictions and len(predictions["instances"]) > 0
    visualizer = Visualizer(bgr[:, :, ::-1], predictor.metadata)
    visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0))
    return visualizer.draw_instance_predictions(predictions["instances"]).get_image()


def test_demo_on_images(trained, tmp_path):
    inputs = _shapes_images(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    weights = trained / "model_final.pth"
    _run(
        [str(DEMO), "--config-file", str(CONFIG), "--input", *map(str, inputs)]
        + ["--output", str(out), "--opts", "MODEL.WEIGHTS", str(weights), *DRAW_ALL]
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs)
    bgr = cv2.imread(str(inputs[0]))
    drawn = cv2.imread(str(out / inputs[0].name))[:, :, ::-1]  # PNG: lossless
    np.testing.assert_array_equal(drawn, _expected_drawing(weights, bgr))
    assert (drawn != bgr[:, :, ::-1]).mean() > 0.5, "segments are drawn over the image"


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def _read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.mark.parametrize("parallel", [False, True], ids=["in_process", "async_predictor"])
def test_demo_on_a_video(trained, tmp_path, parallel):
    frames = [cv2.imread(str(p)) for p in _shapes_images(tmp_path)]
    video = tmp_path / "clip.avi"
    _write_video(video, frames + frames[::-1])
    out = tmp_path / "out"
    out.mkdir()
    args = [str(DEMO), "--config-file", str(CONFIG), "--video-input", str(video)]
    args += ["--output", str(out)] + (["--parallel"] if parallel else [])
    _run(args + ["--opts", "MODEL.WEIGHTS", str(trained / "model_final.pth"), *DRAW_ALL])
    written = list(out.iterdir())
    assert len(written) == 1 and written[0].stem == "clip", written
    drawn = _read_video(written[0])
    assert len(drawn) == 6 and drawn[0].shape == frames[0].shape
    # frames 0 and 5 show the same image: drawn alike (up to compression)
    assert np.abs(drawn[0].astype(int) - drawn[5].astype(int)).mean() < 3
    # frame 0 is the video visualizer's drawing of the decoded frame, up to compression
    decoded = _read_video(video)[0]
    expected = _expected_video_drawing(trained / "model_final.pth", decoded)
    drawn0, expected, decoded = (x.astype(int) for x in (drawn[0], expected, decoded))
    assert np.abs(drawn0 - expected).mean() < 6  # MJPG compression of the written frame
    overlay = np.abs(expected - decoded).max(-1) > 20  # where the drawing changes the frame
    assert overlay.mean() > 0.01, "instances are drawn over the frame"
    # there the written frame is the drawing, not the input
    to_drawing = np.abs(drawn0 - expected)[overlay].mean()
    assert to_drawing < 0.5 * np.abs(drawn0 - decoded)[overlay].mean()


def _expected_video_drawing(weights: Path, bgr: np.ndarray) -> np.ndarray:
    """The video demo's BGR drawing of one frame, computed here with the public API."""
    from mask2former.config import get_cfg
    from mask2former.engine.defaults import DefaultPredictor
    from mask2former.utils.video_visualizer import VideoVisualizer

    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.WEIGHTS", str(weights), *DRAW_ALL])
    predictor = DefaultPredictor(cfg)
    instances = predictor(bgr)["instances"]
    assert len(instances) > 0
    vis = VideoVisualizer(predictor.metadata).draw_instance_predictions(bgr[:, :, ::-1], instances)
    return vis.get_image()[:, :, ::-1]


def test_demo_writes_nothing_for_a_missing_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--config-file", str(CONFIG)]
        + ["--input", str(tmp_path / "none*.png"), "--output", str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "The input path(s) was not found" in proc.stderr
    assert list(tmp_path.iterdir()) == []
