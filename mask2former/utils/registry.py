"""Lookup in an fvcore ``Registry`` with an error that lists what is registered."""

from typing import Any

from fvcore.common.registry import Registry


def lookup(registry: Registry, name: str, config_key: str) -> Any:
    """``registry.get(name)``, raising a KeyError that names the config key and the choices."""
    if name not in registry:
        known = ", ".join(sorted(name for name, _ in registry))
        raise KeyError(
            f"{config_key} = {name!r} is not in the {registry._name} registry; "
            f"registered names: {known}"
        )
    return registry.get(name)
