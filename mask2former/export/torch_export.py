"""``torch.export`` and ONNX export of the inference graph (reference deformable attention path).

What is exported, at the example's image size: by default the logits graph, normalisation,
backbone, pixel decoder and transformer decoder, from images (N, 3, H, W) to
``(pred_logits, pred_masks)`` (see :class:`LogitsModel`); with ``postprocessing=True`` the
semantic graph, from images (N, 3, h, w) to label maps (N, height, width), padding, semantic
inference, cropping, resizing and argmax included (see :class:`SemanticLabelsModel`).

What is not: panoptic and instance post-processing (their outputs have data-dependent
shapes; run :mod:`mask2former.modeling.postprocessing` on the exported logits) and the
compiled deformable-attention kernels (the graph uses the pure-PyTorch reference path, made
of standard operators, so any runtime can execute it).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mask2former.ops import force_reference_path

from .logits import LogitsModel
from .semantic import SemanticLabelsModel


def _graph(
    model: nn.Module, postprocessing: bool, output_size: tuple[int, int] | None
) -> LogitsModel:
    if model.training:
        raise ValueError("export the model in eval mode: call model.eval() first")
    if postprocessing:
        return SemanticLabelsModel(model, output_size).eval()
    if output_size is not None:
        raise ValueError("output_size is the size of the label maps: it needs postprocessing=True")
    return LogitsModel(model).eval()


def export_program(
    model: nn.Module,
    images: torch.Tensor,
    *,
    postprocessing: bool = False,
    output_size: tuple[int, int] | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` of the graph for inputs shaped like ``images`` (N, 3, H, W).

    ``postprocessing``: the graph returns label maps (N, height, width) int64, of size
    ``output_size`` (default: the images' size), instead of ``(pred_logits, pred_masks)``.
    """
    with force_reference_path(), torch.no_grad():
        return torch.export.export(_graph(model, postprocessing, output_size), (images,))


def export_onnx(
    model: nn.Module,
    images: torch.Tensor,
    path: str,
    opset: int = 18,
    *,
    postprocessing: bool = False,
    output_size: tuple[int, int] | None = None,
) -> str:
    """Write the graph as ONNX to ``path``; input "images", outputs "pred_logits" and
    "pred_masks", or "labels" with ``postprocessing`` (see :func:`export_program`).
    Returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory of the ONNX output does not exist: {directory}")
    outputs = ["labels"] if postprocessing else ["pred_logits", "pred_masks"]
    with force_reference_path(), torch.no_grad():
        program = torch.onnx.export(
            _graph(model, postprocessing, output_size),
            (images,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
        )
    program.save(path)
    return path
