"""Datasets: manifests in every accepted format, their validation, and patient-level splits."""

from __future__ import annotations

from volseg.data.formats import load_manifest
from volseg.data.manifest import Case, ImageSource, Manifest, save_manifest
from volseg.data.splits import load_splits, make_splits, save_splits
from volseg.data.validate import ManifestError, check_manifest, validate_manifest

__all__ = [
    "Case",
    "ImageSource",
    "Manifest",
    "ManifestError",
    "check_manifest",
    "load_manifest",
    "load_splits",
    "make_splits",
    "save_manifest",
    "save_splits",
    "validate_manifest",
]
