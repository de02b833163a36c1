"""Reports: a self-contained ``report.html`` and a ``report.md`` with PNGs from the folders
that ``volseg evaluate``, ``volseg train`` and ``volseg predict`` write.

:func:`write_report` is what ``volseg report`` runs; :func:`collect` finds and reads the
folders; :func:`paired_test` is the paired comparison used between evaluations.
"""

from __future__ import annotations

from volseg.report.build import build_sections, write_report
from volseg.report.collect import Bench, Collection, Evaluation, Predictions, Run, collect
from volseg.report.compare import PairedTest, paired_test

__all__ = [
    "Bench",
    "Collection",
    "Evaluation",
    "PairedTest",
    "Predictions",
    "Run",
    "build_sections",
    "collect",
    "paired_test",
    "write_report",
]
