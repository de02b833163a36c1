"""The 'Probes' section: each ``volseg probe`` table (metric, 95% CI, spread across seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from volseg.report.collect import Probe, number
from volseg.report.render import Section, Table

HEADER = [
    "protocol", "setting", "metric", "value", "95% CI", "seeds: std [min, max]", "n_train",
    "n_test", "encoder", "weights",
]  # fmt: skip


def probe_sections(probes: Sequence[Probe]) -> list[Section]:
    """One 'Probes' section holding a table per probe folder; none without probes."""
    if not probes:
        return []
    tables = []
    for probe in probes:
        rows = [
            [
                r.get("protocol", ""),
                r.get("setting", ""),
                r.get("metric", ""),
                _num(r.get("value")),
                f"[{_num(r.get('ci95_low'))}, {_num(r.get('ci95_high'))}]",
                _spread(r),
                r.get("n_train", ""),
                r.get("n_test", ""),
                r.get("encoder", ""),
                _weights(r.get("weights", "")),
            ]  # fmt: skip
            for r in probe.rows
        ]
        notes = [
            f"Rows: {probe.meta['pooling']}." if probe.meta.get("pooling") else "",
            f"Splits: {probe.meta['split_rule']}." if probe.meta.get("split_rule") else "",
            "95% CIs: percentile bootstrap over test cases; few-shot values are means over "
            "seeds, with their spread.",
        ]
        tables.append(
            Table(HEADER, rows, caption=" ".join(n for n in notes if n), title=probe.name)
        )
    return [Section("Probes", tables)]


def _num(value: object) -> str:
    v = number(value)
    return f"{v:.3f}" if math.isfinite(v) else "n/a"


def _spread(row: dict[str, str]) -> str:
    if not row.get("std"):
        return ""
    return f"{_num(row['std'])} [{_num(row.get('min'))}, {_num(row.get('max'))}]"


def _weights(weights: str) -> str:
    return "random (not pretrained)" if weights == "random" else weights
