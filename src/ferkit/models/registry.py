"""Model registry: name -> constructor, as in timm's `create_model`."""

from __future__ import annotations

from collections.abc import Callable

from ferkit.errors import ArgumentError
from ferkit.models.base import FerModel

_REGISTRY: dict[str, Callable[..., FerModel]] = {}


def register_model(fn: Callable[..., FerModel]) -> Callable[..., FerModel]:
    """Decorator: register a constructor under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> FerModel:
    """Build a registered model by name; keyword arguments go to its constructor."""
    try:
        constructor = _REGISTRY[name]
    except KeyError:
        raise ArgumentError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None
    try:
        return constructor(**kwargs)
    except TypeError as exc:
        raise ArgumentError(f"bad arguments for model {name!r}: {exc}") from None


def model_description(name: str) -> str:
    """First line of the constructor's docstring."""
    doc = (_REGISTRY[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
