"""``torch.export`` and ONNX export of the logits graph (reference deformable attention path).

What is exported: normalisation, backbone, pixel decoder and transformer decoder, from
images (N, 3, H, W) to ``(pred_logits, pred_masks)`` (see :class:`LogitsModel`), at the
example's image size. What is not: post-processing (semantic / panoptic / instance outputs
have data-dependent shapes; run :mod:`mask2former.modeling.postprocessing` on the exported
logits) and the compiled deformable-attention kernels (the graph uses the pure-PyTorch
reference path, made of standard operators, so any runtime can execute it).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mask2former.ops import force_reference_path

from .logits import LogitsModel


def _logits_model(model: nn.Module) -> LogitsModel:
    if model.training:
        raise ValueError("export the model in eval mode: call model.eval() first")
    return LogitsModel(model).eval()


def export_program(model: nn.Module, images: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the logits graph for inputs shaped like ``images`` (N, 3, H, W)."""
    with force_reference_path(), torch.no_grad():
        return torch.export.export(_logits_model(model), (images,))


def export_onnx(model: nn.Module, images: torch.Tensor, path: str, opset: int = 18) -> str:
    """Write the logits graph as ONNX to ``path``; inputs "images", outputs "pred_logits",
    "pred_masks". Returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory of the ONNX output does not exist: {directory}")
    with force_reference_path(), torch.no_grad():
        program = torch.onnx.export(
            _logits_model(model),
            (images,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["pred_logits", "pred_masks"],
        )
    program.save(path)
    return path
