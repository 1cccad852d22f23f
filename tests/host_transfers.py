"""Counting the tensor calls that stall a GPU: reads of tensor data on the host, and ops whose
output size depends on the data.

On a GPU each such call waits for every queued kernel to finish. :class:`HostTransferCounter`
wraps them for the duration of a ``with`` block and counts them by kind and by the line of
``mask2former`` that made them:

- reads: ``item``, ``tolist``, ``cpu``, ``to`` a CPU device, ``bool()``, ``int()``,
  ``float()``, ``operator.index()`` (and so ``if tensor:``, ``f"{tensor:.3f}"``);
- data-dependent sizes: ``nonzero``, ``argwhere``, ``masked_select``, ``unique``,
  ``unique_consecutive``, ``bincount``, ``repeat_interleave``, one-argument ``where``,
  reading with a bool tensor index, and writing with one (except a Python number or a
  one-element CPU tensor, which PyTorch writes by ``masked_fill_``, reading no sizes).

On a GPU (``device`` not the CPU) only calls on tensors that are not on the CPU count. On the
CPU every tensor is on the host, so every such call counts whatever it is called on, except
``to``: there a copy to the model's device cannot be told from a copy to the host. ``numpy()``
is not counted: it refuses a GPU tensor, so a transfer before it is a counted ``cpu()``.
Copies from the host to a GPU (small index tensors, lookup tables) are not counted either,
though from pageable memory they too wait for the device.

The methods are wrapped on the class rather than intercepted with a ``TorchFunctionMode``
because a mode does not see the calls made inside a custom op (deformable attention's).
A call made while another counted call runs (``__format__`` calling ``item``) counts once.

Example::

    with HostTransferCounter("cpu") as counter:
        loss_dict = model(batch)
    counter.by_file()  # {"modeling/matcher.py": 3, ...}
"""

from __future__ import annotations

import collections
import functools
import sys
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "mask2former"

#: Tensor methods that copy tensor data to the host.
READS = ("item", "tolist", "cpu", "__bool__", "__int__", "__float__", "__index__")
#: Methods (of tensors and of ``torch``) whose output size depends on the data.
DATA_DEPENDENT = (
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
    "repeat_interleave",
)
_MISSING = object()


def _has_bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _is_masked_fill(tensor: torch.Tensor, index, value) -> bool:
    """Whether PyTorch writes ``tensor[index] = value`` by ``masked_fill_`` (reading no sizes):
    one bool index on the tensor's device, and a Python number or one-element CPU tensor."""
    if isinstance(value, torch.Tensor) and (value.numel() != 1 or value.device.type != "cpu"):
        return False
    parts = index if isinstance(index, tuple) else (index,)
    masks = [p for p in parts if isinstance(p, torch.Tensor)]
    return len(masks) == 1 and masks[0].device == tensor.device


def _to_cpu(args, kwargs) -> bool:
    """Whether ``tensor.to(*args, **kwargs)`` (args without the tensor) names a CPU device."""
    if args and isinstance(args[0], torch.Tensor):  # to(other): other's device
        return args[0].device.type == "cpu"
    device = torch._C._nn._parse_to(*args, **kwargs)[0]
    return device is not None and device.type == "cpu"


class HostTransferCounter:
    """Counts host reads and data-dependent sizes while active; see the module docstring.

    ``counts``: kind -> calls; ``sites``: ("file:line function", kind) -> calls, the site
    being the innermost frame in ``mask2former`` (or "outside mask2former").
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.on_cpu = torch.device(device).type == "cpu"
        self.counts: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[tuple[str, str]] = collections.Counter()
        self._depth = 0
        self._saved: list[tuple[object, str, object]] = []

    def total(self) -> int:
        return sum(self.counts.values())

    def by_file(self) -> dict[str, int]:
        """Calls per file of ``mask2former`` ("modeling/matcher.py")."""
        files: collections.Counter[str] = collections.Counter()
        for (site, _), n in self.sites.items():
            files[site.split(":")[0]] += n
        return dict(files)

    def report(self) -> str:
        lines = [f"{n:4d} {kind:24s} {site}" for (site, kind), n in sorted(self.sites.items())]
        return "\n".join(lines) or "(none)"

    # ------------------------------------------------------------------ counting
    def _counts_on(self, tensor) -> bool:
        return isinstance(tensor, torch.Tensor) and (self.on_cpu or tensor.device.type != "cpu")

    def _kind(self, name: str, args, kwargs) -> str | None:
        """The kind of transfer ``name(*args, **kwargs)`` is, or None."""
        if not args or not self._counts_on(args[0]):
            return None
        if name in READS or name in DATA_DEPENDENT:
            return name
        if name == "where" and len(args) + len(kwargs) == 1:
            return "where (one argument)"
        if name == "__getitem__" and _has_bool_index(args[1]):
            return "__getitem__ with a bool index"
        if name == "__setitem__" and _has_bool_index(args[1]) and not _is_masked_fill(*args):
            return "__setitem__ with a bool index"
        if name == "to" and not self.on_cpu and _to_cpu(args[1:], kwargs):
            return "to the CPU"
        return None

    def _record(self, kind: str) -> None:
        self.counts[kind] += 1
        frame = sys._getframe(2)
        site = "outside mask2former"
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if PACKAGE_DIR in path.parents:
                relative = path.relative_to(PACKAGE_DIR).as_posix()
                site = f"{relative}:{frame.f_lineno} {frame.f_code.co_name}"
                break
            frame = frame.f_back
        self.sites[(site, kind)] += 1

    def _wrapped(self, name: str, original):
        counter = self

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if counter._depth == 0:
                kind = counter._kind(name, args, kwargs)
                if kind is not None:
                    counter._record(kind)
            counter._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                counter._depth -= 1

        return wrapper

    def _patch(self, owner, name: str) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, self._wrapped(name, original))

    def __enter__(self) -> HostTransferCounter:
        names = READS + DATA_DEPENDENT + ("__getitem__", "__setitem__", "to", "where")
        for name in names:
            self._patch(torch.Tensor, name)
        for name in DATA_DEPENDENT + ("where",):
            self._patch(torch, name)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, saved in reversed(self._saved):
            if saved is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, saved)
        self._saved.clear()
