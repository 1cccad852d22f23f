"""nonfinite_names: one fused check over many tensors, exact names on failure."""

import torch

from mask2former.utils.finite import nonfinite_names


def test_names_the_tensors_with_nan_or_inf_in_order():
    tensors = {
        "a": torch.zeros(3),
        "b": torch.tensor([1.0, float("inf")]),
        "steps": torch.tensor(7),  # integer: skipped
        "c": torch.full((2, 2), float("nan"), dtype=torch.float64),
        "d": torch.zeros(0),
    }
    assert nonfinite_names(tensors.items()) == ["b", "c"]
    assert nonfinite_names([]) == []


def test_large_finite_values_are_finite():
    """Their 2-norm overflows (float32 and float16): the entries decide, not the norm."""
    tensors = [("big", torch.full((4,), 3e38)), ("half", torch.full((8,), 6e4).half())]
    assert nonfinite_names(tensors) == []
