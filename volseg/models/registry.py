"""Named builders for encoders and heads, so a new one is a single decorated function or class.

    @HEADS.register("seg3d")
    class SegHead3D(nn.Module): ...

    head = HEADS.build("seg3d", in_channels=768, num_classes=4)

Members register themselves where they are defined; :mod:`volseg.models.build`, which builds
every model, imports each member module by name (one import line per new module), and the
``volseg.models`` package imports ``build``, so the registries are complete as soon as any
part of ``volseg.models`` is imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from volseg.errors import VolsegError

B = TypeVar("B", bound=Callable[..., nn.Module])


class Registry:
    """Name -> builder (a function or class returning an ``nn.Module``) for one kind of part."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., nn.Module]] = {}

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator that files ``builder`` under ``name`` and returns it unchanged."""

        def add(builder: B) -> B:
            old = self._builders.get(name)
            if old is not None and _origin(old) != _origin(builder):  # a reload may re-register
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def build(self, name: str, **kwargs: Any) -> nn.Module:
        """Call the builder registered as ``name`` with ``kwargs``.

        Raises:
            VolsegError: no such name; the message lists the known names and the closest one.
        """
        known = self.names()
        if name not in self._builders:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise VolsegError(f"unknown {self.kind} {name!r}; {hint}known: {', '.join(known)}")
        return self._builders[name](**kwargs)


def _origin(builder: Callable[..., nn.Module]) -> tuple[str, str]:
    return builder.__module__, builder.__qualname__


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``module`` (only ``requires_grad`` ones if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


HEADS = Registry("head")
ENCODERS = Registry("encoder")
