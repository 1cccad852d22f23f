"""One's own dataset end to end: a folder of images and semantic label PNGs (made by the shapes
generator) is converted to panoptic, checked, then trained on for two iterations and evaluated
by ``tools/train_net.py`` with the published quick-start config plus the overrides that
``tools/check_dataset.py`` prints (DATASETS.FOLDERS registers the folder in the new process)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data import _folder_samples as S

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_folder_dataset_converts_checks_trains_and_evaluates(tmp_path, capsys):
    root = S.shapes_folder(tmp_path / "mine", train=4, val=2)
    convert = _tool("convert_dataset")
    convert.main(convert.parse_args(["sem-to-panoptic", str(root)]))
    check = _tool("check_dataset")
    capsys.readouterr()
    assert check.main(check.parse_args([str(root)])) == 0
    overrides = capsys.readouterr().out.strip().splitlines()[-1]
    assert "DATASETS.TRAIN '(\"mine_train\",)'" in overrides
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 6" in overrides

    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(CONFIG)]
    command += shlex.split(overrides)
    command += ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
    command += ["OUTPUT_DIR", str(out)]
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    for key in ("panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"):
        assert 0.0 <= metrics[key] <= 100.0, key
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 1
    assert (out / "inference" / "mine_val" / "sem_seg_predictions.json").is_file()
    assert "Registered mine_train, mine_train_panoptic" in proc.stderr + proc.stdout
