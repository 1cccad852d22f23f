"""File access for the whole package: one iopath ``PathManager`` and an atomic writer.

Every reader of a file named by a user (config files, images, dataset annotations, evaluator
ground truth, checkpoints) goes through :data:`PathManager`: a local path, an ``http(s)://``
URL (downloaded once into iopath's cache) or a ``detectron2://`` name of detectron2's file
server, as the published configs' ``MODEL.WEIGHTS`` use. Readers that hand a file name to
another library (OpenCV, pycocotools, torch) pass ``PathManager.get_local_path(path)``;
readers of a stream use ``PathManager.open``. Writers write local files, whole, with
:func:`atomic_write` or :func:`save_json`, folders whole with :func:`atomic_directory`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from iopath.common.file_io import HTTPURLHandler, PathHandler
from iopath.common.file_io import PathManager as _PathManager

__all__ = [
    "Detectron2Handler",
    "PathManager",
    "atomic_directory",
    "atomic_write",
    "atomic_write_temporaries",
    "load_json",
    "save_json",
]


class Detectron2Handler(PathHandler):
    """Resolves ``detectron2://X`` to ``https://dl.fbaipublicfiles.com/detectron2/X``, fetched
    by ``path_manager`` (which needs an http handler)."""

    PREFIX = "detectron2://"
    URL = "https://dl.fbaipublicfiles.com/detectron2/"

    def __init__(self, path_manager: _PathManager):
        super().__init__()
        self._path_manager = path_manager

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _url(self, path: str) -> str:
        return self.URL + path[len(self.PREFIX) :]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        return self._path_manager.get_local_path(self._url(path), **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs: Any) -> IO:
        return self._path_manager.open(self._url(path), mode, **kwargs)


def _package_path_manager() -> _PathManager:
    manager = _PathManager()
    manager.register_handler(HTTPURLHandler())
    manager.register_handler(Detectron2Handler(manager))
    return manager


#: The package's one PathManager: local paths, http(s) URLs and ``detectron2://`` names. Its
#: own instance, not iopath's global ``g_pathmgr``, so that other libraries' handlers do not
#: change what it resolves (detectron2 keeps its own for the same reason).
PathManager = _package_path_manager()


def read_bytes(path: str, what: str) -> bytes:
    """The contents of ``path`` (read through :data:`PathManager`); a missing file raises
    FileNotFoundError naming ``what`` and ``path``."""
    try:
        with PathManager.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path!r}") from None


def load_json(path: str, what: str = "JSON file", error: type[ValueError] = ValueError) -> Any:
    """Parse the JSON file at ``path`` (read through :data:`PathManager`).

    A missing file raises FileNotFoundError and malformed JSON raises ``error``, both
    naming ``what`` and ``path``.
    """
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(local, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON ({len(raw)} bytes): {e}") from e


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The name :func:`atomic_write` gives its temporary file: "." + the target's basename + "."
#: + mkstemp's 8 random characters (a-z, 0-9, _) + ".tmp".
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def atomic_write_temporaries(directory: str) -> dict[str, str]:
    """The temporary files of :func:`atomic_write` in ``directory``: {file name: basename of
    the file it was to replace}. A write killed before its rename leaves one behind; a write
    in progress has one too, so remove them only where no write can be under way."""
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    matches = (_TEMPORARY_NAME.fullmatch(name) for name in names)
    return {m.group(0): m.group("target") for m in matches if m}


@contextlib.contextmanager
def atomic_write(filename: str, mode: str = "wb") -> Iterator[IO]:
    """Write ``filename`` whole or not at all.

    Yields a file opened in ``mode`` ("wb" or "w") on a new temporary file in the same
    directory, named ``.<basename>.<random>.tmp`` so that concurrent writers never share one.
    When the block ends normally the file is flushed, fsynced, given the permissions a plain
    ``open`` would (0666 less the umask; ``mkstemp`` makes it 0600) and renamed over
    ``filename`` (``os.replace``, atomic on one file system); on an exception it is removed
    and ``filename`` is left as it was. The directory must exist.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(filename)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, filename)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_json(data: Any, filename: str) -> None:
    """Write ``data`` as JSON to ``filename`` with :func:`atomic_write`, creating its folder.

    Encoded in one piece by ``json.dumps`` (the same text as ``json.dump``, which streams
    through the pure-Python encoder: several times slower for an evaluator's results).
    """
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    text = json.dumps(data)
    with atomic_write(filename, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_directory(dirname: str) -> Iterator[str]:
    """Write the folder ``dirname`` whole or not at all.

    Yields the path of a new empty folder beside ``dirname``, named
    ``.<basename>.<random>.tmp``, to fill. When the block ends normally it is given the
    permissions a plain ``os.makedirs`` would (0777 less the umask) and takes the place of
    ``dirname``; a previous ``dirname`` is renamed aside first and then removed. On an
    exception it is removed and ``dirname`` is left as it was. Creates the parent folder.
    """
    parent = os.path.dirname(os.path.abspath(dirname))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dirname)}.", suffix=".tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = tmp + ".old"
        if os.path.isdir(dirname):
            os.rename(dirname, old)
        os.rename(tmp, dirname)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
