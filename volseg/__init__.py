"""volseg: slice-wise foundation-model encoders and light 3D heads for medical volumes."""

from __future__ import annotations

from typing import Any

from volseg.errors import VolsegError

__version__ = "0.1.0"

__all__ = ["VolsegError", "__version__", "predict_volume"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import volseg` stays cheap (no torch or MONAI until a prediction).
    if name == "predict_volume":
        from volseg.inference import predict_volume

        return predict_volume
    raise AttributeError(f"module 'volseg' has no attribute {name!r}")
