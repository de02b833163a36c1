"""A bench config's ``probes:``: ``volseg probe`` runs beside the trained models."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volseg.config import Config, load_config
from volseg.io.atomic import atomic_path
from volseg.probe.run import run_probe
from volseg.probe.table import COLUMNS

if TYPE_CHECKING:
    from volseg.bench import BenchProbe


def run_bench_probes(probes: Sequence[BenchProbe], out: Path, *, progress: bool = True) -> Path:
    """Run a bench's probes into ``out/probes/<name>/`` and gather their rows into
    ``out/probes.csv`` (a ``probe`` column first); returns that file's path.

    Features are cached in ``out/probes/cache`` (unless a probe sets ``train.cache_dir``),
    keyed by encoder, weights and preprocessing, so protocols on one encoder share them.
    """
    rows: list[dict[str, Any]] = []
    for probe in probes:
        overrides = [f"train.cache_dir={out / 'probes' / 'cache'}", *probe.overrides]
        config = load_config(Config, probe.config or None, overrides)
        if progress:
            print(f"probe {probe.name}: {probe.protocol}, {config.model.encoder.name}")
        _, probe_rows = run_probe(
            config,
            protocol=probe.protocol,
            out=out / "probes" / probe.name,
            shots=probe.shots,
            seeds=probe.seeds,
            progress=progress,
        )
        rows += [{"probe": probe.name, **row} for row in probe_rows]
    path = out / "probes.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["probe", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
