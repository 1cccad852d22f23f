"""Registries of datasets (name -> function returning list[dict]) and of their metadata."""

from __future__ import annotations

import logging
import types
from collections import UserDict
from typing import Any, Callable

logger = logging.getLogger(__name__)


class _DatasetCatalog(UserDict):
    """Name -> zero-argument function returning the dataset as ``list[dict]``.

    The function runs on every ``get`` (registration is lazy), in detectron2's format:
    each dict has "file_name", "height", "width", "image_id" and task-specific keys.
    """

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}): expected a function, got {func!r}")
        if name in self:
            raise KeyError(f"dataset {name!r} is already registered")
        self[name] = func

    def get(self, name: str) -> list[dict]:
        if name not in self:
            raise KeyError(
                f"dataset {name!r} is not registered; registered datasets: {', '.join(self.list())}"
            )
        return self[name]()

    def list(self) -> list[str]:
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.list())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Facts about one dataset: class names and colours, id maps, ignore label, file paths.

    Attributes are set once with :meth:`set`; setting one again to a different value is an
    error (two parts of the code disagreeing about a dataset). A missing attribute raises an
    AttributeError that lists what is set.
    """

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"metadata of dataset {self.__dict__.get('name', 'N/A')!r} has no {key!r}; "
            f"available: {', '.join(sorted(self.__dict__))}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__ and self.__dict__[key] != value:
            raise AssertionError(
                f"metadata {key!r} of dataset {self.name!r} is already {self.__dict__[key]!r}; "
                f"refusing to change it to {value!r}"
            )
        super().__setattr__(key, value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set(self, **kwargs: Any) -> "Metadata":
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)


class _MetadataCatalog(UserDict):
    """Name -> :class:`Metadata`; ``get`` creates an empty one on first use."""

    def get(self, name: str) -> Metadata:
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> list[str]:
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()
