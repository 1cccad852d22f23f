"""Tensor-level views of a model for export, tracing and FLOP counting."""

from .flops import activation_count, flop_count, ms_deform_attn_flop_jit, parameter_table
from .logits import LogitsModel
from .semantic import SemanticLabelsModel
from .torch_export import export_onnx, export_program

__all__ = [
    "LogitsModel",
    "SemanticLabelsModel",
    "activation_count",
    "export_onnx",
    "export_program",
    "flop_count",
    "ms_deform_attn_flop_jit",
    "parameter_table",
]
