"""A set of per-instance fields of equal length, as detectron2's ``Instances``."""

from __future__ import annotations

from typing import Any, Union

import torch


class Instances:
    """Per-instance fields (tensors, ``Boxes``, ``BitMasks``, lists) of one image.

    ``image_size`` is (height, width). Fields are set as attributes and all have the
    same length: ``inst.gt_classes = torch.tensor([...])``.
    """

    def __init__(self, image_size: tuple[int, int], **kwargs: Any):
        self._image_size = image_size
        self._fields: dict[str, Any] = {}
        for name, value in kwargs.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Instances has no field {name!r}")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        data_len = len(value)
        if self._fields and len(self) != data_len:
            raise ValueError(
                f"field {name!r} has length {data_len}, but Instances has length {len(self)}"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        result = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            result.set(name, value)
        return result

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Instances":
        if isinstance(item, int):
            if not -len(self) <= item < len(self):
                raise IndexError(f"Instances index {item} out of range for length {len(self)}")
            item = item % len(self)
            item = slice(item, item + 1)
        result = Instances(self._image_size)
        for name, value in self._fields.items():
            if isinstance(value, list):
                if isinstance(item, torch.Tensor):
                    indices = item.nonzero().flatten() if item.dtype == torch.bool else item
                    value = [value[i] for i in indices.tolist()]
                else:
                    value = value[item]
            else:
                value = value[item]
            result.set(name, value)
        return result

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __iter__(self):
        raise NotImplementedError("Instances cannot be iterated; index it instead")

    @staticmethod
    def cat(instance_lists: list["Instances"]) -> "Instances":
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        first = instance_lists[0]
        for inst in instance_lists[1:]:
            if inst.image_size != first.image_size:
                raise ValueError(
                    f"Instances.cat: image sizes differ: {inst.image_size} vs {first.image_size}"
                )
            if inst._fields.keys() != first._fields.keys():
                raise ValueError(
                    f"Instances.cat: fields differ: {sorted(inst._fields)} vs {sorted(first._fields)}"
                )
        result = Instances(first.image_size)
        for name, value in first._fields.items():
            values = [inst.get(name) for inst in instance_lists]
            if isinstance(value, torch.Tensor):
                merged = torch.cat(values, dim=0)
            elif isinstance(value, list):
                merged = [v for vs in values for v in vs]
            elif hasattr(type(value), "cat"):
                merged = type(value).cat(values)
            else:
                raise TypeError(f"cannot concatenate field {name!r} of type {type(value)}")
            result.set(name, merged)
        return result

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {type(v).__name__}" for k, v in self._fields.items())
        return f"Instances(num_instances={len(self)}, image_size={self._image_size}, {fields})"
