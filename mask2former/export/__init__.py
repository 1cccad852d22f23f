"""Tensor-level views of a model for export, tracing and FLOP counting."""
from .logits import LogitsModel

__all__ = ["LogitsModel"]
