"""volseg: slice-wise foundation-model encoders and light 3D heads for medical volumes."""

from __future__ import annotations

from volseg.errors import VolsegError

__version__ = "0.1.0"

__all__ = ["VolsegError", "__version__"]
