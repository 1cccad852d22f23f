"""``tools/train_net.py`` needs ``--config-file``: without one it says so before doing anything."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mask2former.config import ConfigError
from mask2former.engine import default_argument_parser, require_config_file

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIG = REPO / "configs" / "shapes" / "mask2former_R18_quickstart.yaml"


def _train_net() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tools_train_net", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flags", [[], ["--eval-only"], ["--resume"]])
def test_no_config_file_is_refused_for_every_kind_of_run(flags):
    args = default_argument_parser().parse_args([*flags, "SOLVER.MAX_ITER", "2"])
    assert args.config_file == ""  # detectron2's default: scripts building a cfg in code parse too
    with pytest.raises(ConfigError, match="pass --config-file FILE"):
        require_config_file(args)
    args = default_argument_parser().parse_args([*flags, "--config-file", str(CONFIG)])
    assert require_config_file(args) == str(CONFIG)


def test_train_net_setup_refuses_no_config_file_before_writing_output(tmp_path):
    out = tmp_path / "out"
    args = default_argument_parser().parse_args(["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)])
    with pytest.raises(ConfigError, match="pass --config-file FILE"):
        _train_net().setup(args)
    assert not out.exists()


def test_train_net_without_config_file_exits_with_the_message(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, str(TRAIN_NET), "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "pass --config-file FILE" in proc.stderr, proc.stderr[-3000:]
    assert "KeyError" not in proc.stderr and not out.exists()
