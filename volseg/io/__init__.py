"""Image IO: read NIfTI, NRRD, MetaImage and DICOM series with their geometry; write them back.

Also the path rules every stage shares (:mod:`volseg.io.paths`): inputs are regular files or
folders, and a case id becomes an output file name only through :func:`case_file_name`; and
the one rule turning a file name into a case id and modality (:mod:`volseg.io.names`).
"""

from __future__ import annotations

from volseg.io.atomic import atomic_path
from volseg.io.image import Geometry, Image
from volseg.io.paths import case_file_name, input_path, output_folder, refuse_overwrite
from volseg.io.read import ImageInfo, read_image, read_info
from volseg.io.write import write_image, write_like

__all__ = [
    "Geometry",
    "Image",
    "ImageInfo",
    "atomic_path",
    "case_file_name",
    "input_path",
    "output_folder",
    "read_image",
    "read_info",
    "refuse_overwrite",
    "write_image",
    "write_like",
]
