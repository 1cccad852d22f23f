"""Directories: a ``transformers`` model directory <-> our config.yaml + weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from mask2former.config import get_cfg

from ..io import atomic_write, read_checkpoint
from . import keys
from .config import (
    cfg_to_hf_config,
    class_names,
    hf_config_to_cfg,
    import_transformers,
)
from .errors import ConversionError
from .state_dict import hf_to_ours_state_dict, ours_to_hf_state_dict

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "convert_hf_to_ours",
    "convert_ours_to_hf",
    "read_weights",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model_final.safetensors"
CONFIG_NAME = "config.yaml"


def convert_hf_to_ours(hf_dir: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """A ``transformers`` model directory (config.json + model.safetensors) -> ``out_dir``
    with our ``config.yaml`` (MODEL.WEIGHTS pointing at the weights) and
    ``model_final.safetensors`` (class names in its metadata, key "class_names", JSON).

    Returns (config path, weights path).
    """
    from safetensors.torch import load_file

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf_config = _read_json(hf_dir / "config.json")
    preprocessor_file = hf_dir / "preprocessor_config.json"
    preprocessor = _read_json(preprocessor_file) if preprocessor_file.is_file() else None
    weights_file = hf_dir / "model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{weights_file}: not found (only safetensors weights are read)")
    cfg = hf_config_to_cfg(hf_config, preprocessor)
    state = hf_to_ours_state_dict(
        load_file(str(weights_file)),
        hf_config["model_type"],
        hf_config["backbone_config"]["model_type"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_out, config_out = out_dir / WEIGHTS_NAME, out_dir / CONFIG_NAME
    metadata = {"class_names": json.dumps(class_names(hf_config)), "source": str(hf_dir)}
    _save_safetensors(state, weights_out, metadata)
    cfg.MODEL.WEIGHTS = str(weights_out.resolve())
    _write_text(config_out, cfg.dump())
    logger.info("converted %s -> %s, %s", hf_dir, config_out, weights_out)
    return config_out, weights_out


def convert_ours_to_hf(
    config_file: str | Path,
    weights_file: str | Path,
    out_dir: str | Path,
    names: list[str] | None = None,
) -> Path:
    """Our YAML config + weights -> a ``transformers`` model directory written by
    ``save_pretrained``. Class names come from ``names``, else from the weights' metadata.

    The weights are loaded into the ``transformers`` model, which must then have every
    parameter; returns ``out_dir``.
    """
    transformers = import_transformers()
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    state, metadata = read_weights(weights_file)
    if names is None:
        if "class_names" not in metadata:
            raise ConversionError(f"{weights_file}: no class names in its metadata; pass names")
        names = json.loads(metadata["class_names"])
    hf_config = cfg_to_hf_config(cfg, names)
    model_class = {
        "mask2former": transformers.Mask2FormerForUniversalSegmentation,
        "maskformer": transformers.MaskFormerForInstanceSegmentation,
    }[hf_config.model_type]
    model = model_class(hf_config)
    backbone_type = hf_config.backbone_config.model_type
    hf_state = ours_to_hf_state_dict(state, hf_config.model_type, backbone_type)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    # Parameters with no counterpart in ours keep transformers' initial values.
    to_ours = keys.rules(keys.TO_OURS, hf_config.model_type, backbone_type)
    missing = [k for k in missing if not keys.dropped(k, to_ours)]
    if missing or unexpected:
        raise ConversionError(
            f"{weights_file}: does not fit the transformers model: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}"
        )
    model.save_pretrained(str(out_dir))
    logger.info("converted %s + %s -> %s", config_file, weights_file, out_dir)
    return Path(out_dir)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A flat state dict (any format :func:`read_checkpoint` reads) and, for
    ``.safetensors``, the file's metadata (else empty)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: weights file not found")
    state = read_checkpoint(str(path))["model"]
    if path.suffix != ".safetensors":
        return state, {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return state, dict(f.metadata() or {})


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]):
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)
    with atomic_write(str(path)) as f:
        f.write(data)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(str(path)) as f:
        f.write(text.encode("utf-8"))
