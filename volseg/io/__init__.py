"""Image IO: read NIfTI, NRRD, MetaImage and DICOM series with their geometry; write them back."""

from __future__ import annotations

from volseg.io.atomic import atomic_path
from volseg.io.image import Geometry, Image
from volseg.io.read import ImageInfo, read_image, read_info
from volseg.io.write import write_image, write_like

__all__ = [
    "Geometry",
    "Image",
    "ImageInfo",
    "atomic_path",
    "read_image",
    "read_info",
    "write_image",
    "write_like",
]
