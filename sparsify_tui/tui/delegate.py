"""A screen's attribute that is its view-model's (:class:`Delegated`)."""

from __future__ import annotations

from typing import Any


class Delegated:
    """``name = Delegated("view")`` reads ``self.view.name`` (and writes it when ``writable``): a screen shows
    its view-model's state under the names the rendering and the tests use."""

    def __init__(self, via: str, *, writable: bool = False) -> None:
        self.via = via
        self.writable = writable

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(getattr(obj, self.via), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if not self.writable:
            raise AttributeError(f"{self.name} is read-only (it is {self.via}.{self.name})")
        setattr(getattr(obj, self.via), self.name, value)
