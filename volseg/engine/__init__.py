"""Training engine: plan, data and feature cache, loop, validation, checkpoints, DDP.

:func:`run_training` (``volseg train``) is the entry point. Importing this package is cheap;
the training modules load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_training"]


def __getattr__(name: str) -> Any:
    if name == "run_training":
        from volseg.engine.train import run_training

        return run_training
    raise AttributeError(f"module 'volseg.engine' has no attribute {name!r}")
