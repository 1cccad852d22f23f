"""Reading and writing weight files: detectron2 ``.pkl``, ``.pth`` and ``.safetensors``.

Nothing here executes code from a file: ``.pkl`` goes through :class:`RestrictedUnpickler`
(containers, numbers, strings and numpy arrays only) and ``.pth`` through
``torch.load(weights_only=True)``.

Module versions: ``nn.Module.state_dict()`` returns an OrderedDict whose attribute
``_metadata`` maps each module prefix to ``{"version": module._version}``, and modules whose
key layout changed (heads, decoders, FrozenBatchNorm2d) read it on load to rename older
layouts. Every reader and writer here keeps it: ``.pth`` and ``.pkl`` pickle the OrderedDict
with its attribute (as ``torch.save`` of a state dict does, and as detectron2's model-zoo
``.pkl`` files may), ``.safetensors`` stores it as JSON in the header entry ``_metadata``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np
import torch

# atomic_write lives in utils.file_io (every writer of the package uses it); re-exported here,
# where it was first public.
from mask2former.utils.file_io import PathManager, atomic_write

__all__ = [
    "CheckpointError",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "atomic_write",
    "read_checkpoint",
    "save_weights",
    "state_dict_metadata",
    "with_metadata",
]

logger = logging.getLogger(__name__)

WEIGHT_FORMATS = (".pkl", ".pth", ".pt", ".safetensors")
#: The attribute torch gives a state dict for module versions, and its .safetensors header key.
METADATA = "_metadata"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; names the file or key."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A pickle that asks for a global outside the allowed set; it was not executed."""


# (module, name) pairs a weights pickle may reference. numpy moved numpy.core to
# numpy._core in 2.0; pickles written by either name the module they were written with.
_NUMPY_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
}
_ALLOWED_GLOBALS = _NUMPY_GLOBALS | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    # protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"),
}


def _allowed_dtype_class(module: str, name: str) -> bool:
    """numpy >= 1.25 pickles dtypes as numpy.dtypes.<Float32DType ...>."""
    return module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler admitting only builtin containers/numbers/strings and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, a class with ``__reduce__`` ...)
    raises :class:`UnsafeCheckpointError` naming ``filename`` and the global, before the
    global is imported or called.
    """

    def __init__(self, file: BinaryIO, filename: str):
        super().__init__(file, encoding="latin1")
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or _allowed_dtype_class(module, name):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.filename}: refusing to unpickle global '{module}.{name}'; a weights .pkl "
            "may hold only dicts, lists, numbers, strings and numpy arrays"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self.filename}: persistent ids are not allowed in a .pkl")


def _to_tensor(value: Any, key: str, filename: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype == object:
            raise CheckpointError(f"{filename}: entry {key!r} is an object array, not weights")
        return torch.from_numpy(np.array(value))
    raise CheckpointError(
        f"{filename}: entry {key!r} is a {type(value).__name__}, not an array or tensor"
    )


def state_dict_metadata(state: Mapping) -> OrderedDict | None:
    """The module versions (``_metadata``) that ``state`` carries, or None."""
    return getattr(state, METADATA, None)


def with_metadata(
    items: Mapping[str, Any] | Iterable[tuple[str, Any]], metadata: Mapping | None
) -> OrderedDict[str, Any]:
    """An OrderedDict of ``items`` that carries ``metadata`` as ``_metadata`` when not None.

    A plain ``dict`` cannot hold the attribute; ``nn.Module.load_state_dict`` reads it from
    the OrderedDict.
    """
    state = OrderedDict(items)
    if metadata is not None:
        setattr(state, METADATA, OrderedDict((k, dict(v)) for k, v in metadata.items()))
    return state


def _checked_metadata(metadata: Any, filename: str) -> OrderedDict | None:
    """``metadata`` as torch writes it ({module prefix: {"version": int, ...}}), or an error."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise CheckpointError(
            f"{filename}: {METADATA} must map module prefixes to dicts, "
            f"got {type(metadata).__name__}"
        )
    checked = OrderedDict()
    for prefix, entry in metadata.items():
        if not isinstance(prefix, str) or not isinstance(entry, Mapping):
            raise CheckpointError(
                f"{filename}: {METADATA}[{prefix!r}] must be a dict under a string module "
                f"prefix, got {type(entry).__name__}"
            )
        version = entry.get("version")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, (int, np.integer))
        ):
            raise CheckpointError(
                f"{filename}: {METADATA}[{prefix!r}]['version'] = {version!r} is not an integer"
            )
        checked[prefix] = dict(entry, version=int(version)) if version is not None else dict(entry)
    return checked


def _state_dict_to_tensors(state: Mapping, filename: str) -> OrderedDict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{filename}: 'model' must be a dict, got {type(state).__name__}")
    tensors = ((str(k), _to_tensor(v, str(k), filename)) for k, v in state.items())
    return with_metadata(tensors, _checked_metadata(state_dict_metadata(state), filename))


def _is_flat_weights(data: Mapping) -> bool:
    return len(data) > 0 and all(
        isinstance(v, (torch.Tensor, np.ndarray, np.generic)) for v in data.values()
    )


def _normalise(data: Any, filename: str) -> dict[str, Any]:
    """``{"model": {name: tensor}, ...other entries}`` from a loaded object."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{filename}: expected a dict, got {type(data).__name__}")
    if "model" in data:
        result = dict(data)
        result["model"] = _state_dict_to_tensors(data["model"], filename)
        return result
    if _is_flat_weights(data):
        return {"model": _state_dict_to_tensors(data, filename)}
    raise CheckpointError(
        f"{filename}: neither a {{'model': state_dict}} checkpoint nor a flat dict of "
        f"weights; top-level keys: {sorted(map(str, data))[:10]}"
    )


#: How a file of each format begins. ``.pth``: torch.save's zip archive, or the pickle of its
#: legacy format (protocol 2: PROTO, 0x80). ``.pkl``: a pickle whose top level is a dict:
#: PROTO from protocol 2 on; in protocols 0 and 1, MARK + DICT, EMPTY_DICT, or the GLOBAL
#: ``collections.OrderedDict``. ``.safetensors``: an 8-byte header length, then JSON.
_ZIP = b"PK\x03\x04"
_PICKLE_DICT_STARTS = (b"\x80", b"(d", b"}", b"ccollections\nOrderedDict\n")
_FORMATS = {
    ".pkl": (_PICKLE_DICT_STARTS, "a pickled dict"),
    ".pth": ((_ZIP, b"\x80"), "a zip archive or a pickle written by torch.save"),
    ".pt": ((_ZIP, b"\x80"), "a zip archive or a pickle written by torch.save"),
    ".safetensors": ((), "an 8-byte header length followed by a JSON header"),
}
#: What a file often is when it was saved under a checkpoint's name by mistake.
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "JPEG data"),
    (b"\x89PNG\r\n\x1a\n", "PNG data"),
    (b"GIF8", "GIF data"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "gzip data"),
    (_ZIP, "a zip archive"),
)
_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body")


def _starts_as(ext: str, head: bytes) -> bool:
    if ext == ".safetensors":
        return head[8:9] == b"{"
    return head.startswith(_FORMATS[ext][0])


def _as_text(head: bytes) -> str | None:
    """``head`` decoded when it is printable UTF-8 text (a character cut at the end allowed)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return None
        text = head[: e.start].decode("utf-8")
    text = text.lstrip("\ufeff")
    return text if all(c.isprintable() or c in "\t\n\r" for c in text) else None


def _describe_start(head: bytes) -> str:
    """What the first bytes of a file say it is, in words: "it is empty", "it holds JPEG
    data", "it starts with '<html>...' (an HTML page ...)", or the bytes themselves."""
    if not head:
        return "it is empty"
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"it holds {what}"
    text = _as_text(head)
    if text is None:
        return f"it starts with the bytes {head[:16]!r}"
    first = (text.strip().splitlines() or [""])[0][:40]
    if first.lower().startswith(_HTML_STARTS):
        return (
            f"it starts with {first!r} (an HTML page: often a server's error page saved in "
            "place of a download)"
        )
    return f"it starts with {first!r} (text)"


def _check_format(filename: str, ext: str, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``filename`` begins as an ``ext`` file does."""
    with open(filename, "rb") as f:
        head = f.read(64)
    if not _starts_as(ext, head):
        name = source if source == filename else f"{source} (fetched to {filename})"
        raise CheckpointError(
            f"not a checkpoint: {name}: {_describe_start(head)}; a {ext} checkpoint is "
            f"{_FORMATS[ext][1]}"
        )


def _read_pkl(filename: str) -> Any:
    with open(filename, "rb") as f:
        try:
            return RestrictedUnpickler(f, filename).load()
        except UnsafeCheckpointError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            AttributeError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            struct.error,
        ) as e:
            raise CheckpointError(
                f"{filename}: not a readable weights pickle: {type(e).__name__}: {e}"
            ) from e


def _torch_refusal_reason(error: Exception) -> str:
    """The reason in torch's weights-only error, without its advice.

    torch wraps the reason in advice to retry with ``weights_only=False`` (which runs any
    code the file holds) or to allow-list globals; every line of that advice is dropped.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).replace("WeightsUnpickler error:", "\n")
    lines = []
    for line in text.splitlines():
        line = line.strip().split(" Please use ")[0]
        advice = ("weights_only", "Weights only load failed", "safe_globals")
        if line and not any(word in line for word in advice):
            lines.append(line)
    return " ".join(lines) or "no reason given"


def _read_pth(filename: str) -> Any:
    try:
        return torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # from None: torch's own message, chained, would advise weights_only=False
        raise UnsafeCheckpointError(
            f"{filename}: refused by torch's weights-only reader ({_torch_refusal_reason(e)}); "
            "nothing in it was run. A .pth checkpoint may hold only tensors, containers, "
            "numbers and strings"
        ) from None
    except (RuntimeError, EOFError, struct.error) as e:
        raise CheckpointError(f"{filename}: not a readable torch file: {e}") from e


def _read_safetensors(filename: str) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(filename, framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            header = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{filename}: not a readable safetensors file: {e}") from e
    if METADATA not in header:
        return tensors
    try:
        metadata = json.loads(header[METADATA])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{filename}: header entry {METADATA!r} is not JSON: {e}") from e
    return with_metadata(tensors, _checked_metadata(metadata, filename))


def _local_file(filename: str) -> str:
    """``filename`` itself, or for a URL (``https://``, ``detectron2://``) its cached download."""
    local = PathManager.get_local_path(filename)
    if not os.path.isfile(local):
        fetched = f" (fetched to {local})" if local != filename else ""
        raise FileNotFoundError(f"checkpoint not found: {filename}{fetched}")
    return local


def read_checkpoint(filename: str) -> dict[str, Any]:
    """Read a weights file into ``{"model": {name: tensor}, ...}``.

    ``.pkl``: detectron2's ``{"model": {name: ndarray}, "__author__": ...,
    "matching_heuristics": ...}`` or a plain ``{name: ndarray}``. ``.pth`` / ``.pt``:
    ``{"model": state_dict, ...}`` (our training checkpoints) or a plain state dict.
    ``.safetensors``: a flat state dict. Other top-level entries are returned unchanged.
    The state dict keeps the file's module versions (``_metadata``) when it has them; they
    are checked to be ``{module prefix: {"version": int}}``. ``filename`` is a local path or
    a URL the package's ``PathManager`` resolves (``https://``, ``detectron2://``), read from
    its local copy. A file that does not begin as its format does (a text file, an HTML error
    page, an image under a checkpoint's name) raises :class:`CheckpointError` saying "not a
    checkpoint" and what the file holds, before any reader sees it.
    """
    source, filename = filename, _local_file(filename)
    readers = {
        ".pkl": _read_pkl,
        ".pth": _read_pth,
        ".pt": _read_pth,
        ".safetensors": _read_safetensors,
    }
    ext = os.path.splitext(filename)[1].lower()
    if ext not in readers:
        raise CheckpointError(f"{filename}: unknown weights format {ext!r}; use {WEIGHT_FORMATS}")
    _check_format(filename, ext, source)
    return _normalise(readers[ext](filename), filename)


def _to_numpy(key: str, tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        raise CheckpointError(f"{key}: bfloat16 has no numpy dtype; save as .pth or .safetensors")
    return tensor.detach().cpu().numpy()


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    filename: str,
    *,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``state_dict`` atomically in the format named by the extension.

    ``.pkl``: ``{"model": {name: ndarray}, **extra}`` (detectron2's layout; pass
    ``extra={"__author__": ..., "matching_heuristics": ...}`` as its converters do).
    ``.pth`` / ``.pt``: ``{"model": state_dict, **extra}``. ``.safetensors``: the flat
    state dict; ``extra`` must then be empty (the format holds only tensors). The module
    versions of ``state_dict`` (its ``_metadata``), if any, are written with it.
    """
    ext = os.path.splitext(filename)[1].lower()
    extra = dict(extra or {})
    metadata = state_dict_metadata(state_dict)
    if ext == ".pkl":
        arrays = with_metadata({k: _to_numpy(k, v) for k, v in state_dict.items()}, metadata)
        with atomic_write(filename) as f:
            pickle.dump({"model": arrays, **extra}, f, protocol=pickle.HIGHEST_PROTOCOL)
    elif ext in (".pth", ".pt"):
        with atomic_write(filename) as f:
            torch.save({"model": with_metadata(state_dict, metadata), **extra}, f)
    elif ext == ".safetensors":
        if extra:
            raise CheckpointError(f"{filename}: .safetensors holds only tensors, got {list(extra)}")
        from safetensors.torch import save

        # safetensors refuses tensors sharing storage; contiguous copies sever sharing
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        header = None if metadata is None else {METADATA: json.dumps(metadata)}
        data = save(tensors, metadata=header)
        with atomic_write(filename) as f:
            f.write(data)
    else:
        raise CheckpointError(f"{filename}: unknown weights format {ext!r}; use {WEIGHT_FORMATS}")
    logger.info("Saved %d weights to %s", len(state_dict), filename)
