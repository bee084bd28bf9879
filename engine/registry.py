"""One registry type for models, datasets, methods and controls.

Each registry maps a name to an object plus a one-line description, so the CLI's `--help`, the
explorer's dropdowns and the error messages all list the same choices.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    def __init__(self, kind: str, module: str):
        self.kind = kind
        self.module = module  # importing it registers the entries: every lookup imports it first
        self._entries: dict[str, Entry[T]] = {}

    def _filled(self) -> dict[str, Entry[T]]:
        importlib.import_module(self.module)
        return self._entries

    def register(self, name: str, help: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, obj, help)
            return obj

        return add

    def names(self) -> list[str]:
        return list(self._filled())

    def describe(self) -> dict[str, str]:
        """{name: one-line help}, for `lottery run --help`."""
        return {e.name: e.help for e in self._filled().values()}

    def get(self, name: str, field: str) -> T:
        """Look a name up; `field` is the config field that holds it, for the error message."""
        entries = self._filled()
        if name not in entries:
            raise ConfigError(field, name, f"known {self.kind}s: {', '.join(entries)}")
        return entries[name].obj


MODELS: Registry = Registry("model", "engine.models")
DATASETS: Registry = Registry("dataset", "engine.data")
METHODS: Registry = Registry("method", "engine.methods")
CONTROLS: Registry = Registry("control", "engine.methods")
