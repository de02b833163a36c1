"""Probing protocols on frozen features: weighted kNN, the linear-probe grid, few-shot.

The data flow: :mod:`~volseg.probe.features` (frozen, cached rows per case or patch) ->
:mod:`~volseg.probe.knn` / :mod:`~volseg.probe.linear` / :mod:`~volseg.probe.fewshot` ->
:mod:`~volseg.probe.table` (metrics, bootstrap CIs, ``probe.csv``/``probe.json``);
:func:`run_probe` composes them for ``volseg probe``. See docs/PROBE.md.
"""

from __future__ import annotations

from volseg.probe.run import PROTOCOLS, probe_splits, run_probe

__all__ = ["PROTOCOLS", "probe_splits", "run_probe"]
