"""Side-by-side comparison of evaluations of one task, with paired per-case tests, and the
leaderboard of a benchmark (``bench.csv`` in the config's model order).

Cases are paired by id. Differences are ``other - baseline`` (the baseline is the first
evaluation given): per-case Dice per class and its mean over classes for segmentation, the
per-case probability of the true class for grading. Each set of differences is tested with a
two-sided Wilcoxon signed-rank test (:func:`paired_test`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from volseg.report import plots
from volseg.report.collect import Bench, Evaluation, number
from volseg.report.render import Block, Figure, Section, Table, Text
from volseg.report.results import (
    CLS_METRICS,
    case_mean,
    case_value,
    fmt,
    labels_of,
    mean_ci,
    summary_value,
)

MIN_WILCOXON = 6  # with 5 non-zero pairs the smallest exact two-sided p is 2 / 2**5 = 0.0625


@dataclass(frozen=True)
class PairedTest:
    """Paired differences and their Wilcoxon signed-rank test (None when not run: ``reason``)."""

    n: int
    nonzero: int
    mean: float
    median: float
    statistic: float | None = None
    pvalue: float | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for a table: ``W = .., p = .. (n = ..)`` or ``n/a (reason)``."""
        if self.pvalue is None or self.statistic is None:
            return f"n/a ({self.reason})"
        return (
            f"W = {self.statistic:g}, p = {self.pvalue:.3g} "
            f"(n = {self.nonzero} non-zero of {self.n} pairs)"
        )


def paired_test(differences: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of paired differences (NaN pairs dropped).

    Zero differences are dropped before ranking (Wilcoxon's original method); the test is run
    only with at least :data:`MIN_WILCOXON` non-zero differences, since fewer can never reach
    p < 0.05 two-sided. scipy uses the exact null distribution for small samples.
    """
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return PairedTest(0, 0, math.nan, math.nan, reason="no paired case with both values")
    nonzero = d[d != 0]
    base = PairedTest(int(d.size), int(nonzero.size), float(d.mean()), float(np.median(d)))
    if nonzero.size == 0:
        return replace(base, reason=f"all {d.size} differences are zero")
    if nonzero.size < MIN_WILCOXON:
        reason = (
            f"n = {nonzero.size} non-zero differences < {MIN_WILCOXON}; a two-sided test "
            "cannot reach p < 0.05"
        )
        return replace(base, reason=reason)
    result = wilcoxon(nonzero)
    return replace(base, statistic=float(result.statistic), pvalue=float(result.pvalue))


LEADERBOARD_COLUMNS = (
    ("score", "score", 3),
    ("train_seconds", "training s", 1),
    ("seconds_per_volume", "s per volume", 3),
    ("peak_memory_mb", "peak memory MB", 0),
)


def leaderboard_sections(benches: Sequence[Bench]) -> list[Section]:
    """One 'Leaderboard' section per benchmark: its bench.csv rows in the config's model
    order, with each model's rank by score (1 = best; higher scores are better)."""
    sections = []
    for bench in benches:
        by_model = {row.get("model", ""): row for row in bench.rows}
        rows = [by_model[m] for m in bench.models if m in by_model]
        scores = sorted(
            {v for r in rows if math.isfinite(v := number(r.get("score")))}, reverse=True
        )
        with_contribution = any(r.get("vs_encoder_off") for r in rows)
        table = []
        for row in rows:
            score = number(row.get("score"))
            rank = str(scores.index(score) + 1) if math.isfinite(score) else "n/a"
            cells = [fmt(row.get(key), digits) for key, _, digits in LEADERBOARD_COLUMNS]
            cells.insert(1, row.get("score_ci95") or "-")
            contribution = [_contribution(row)] if with_contribution else []
            table.append(
                [
                    row.get("model", ""),
                    rank,
                    *cells,
                    *contribution,
                    row.get("score_name", ""),
                    row.get("device", ""),
                ]
            )
        header = ["model", "rank", *(title for _, title, _ in LEADERBOARD_COLUMNS)]
        header.insert(3, "score 95% CI")
        grading = [r for r in rows if r.get("vs_encoder_off") and r.get("task") == "classification"]
        segmentation = [r for r in rows if r.get("vs_encoder_off") and r not in grading]
        metric = "/".join(m for m, used in (("Dice", segmentation), ("AUC", grading)) if used)
        if with_contribution:
            header.append(f"encoder's contribution: {metric} - encoder off [95% CI]")
        caption = (
            f"{bench.path / 'bench.csv'}, in the order of the bench config's models; rank by "
            "score (1 = best). Scores are on the held-out test set "
            f"{bench.test or '(see bench.yaml)'}; their CIs and paired tests follow below."
        )
        if segmentation:
            caption += (
                " The encoder's contribution is the mean over test cases of a model's per-case "
                "foreground-mean Dice minus that of its encoder-off row (the same head with "
                "model.encoder.name=none; bench.yaml pairs them) on the same case, with a "
                "paired bootstrap 95% CI over cases; '-' where a row has no such pair."
            )
        if grading:
            caption += (
                " A grading model's contribution is its AUC minus that of its encoder-off row "
                "(the size head: the tumour's volume, no encoder; bench.yaml pairs them) on the "
                "same test cases, with a paired bootstrap 95% CI over cases."
            )
        sections.append(
            Section(
                f"Leaderboard: {bench.name}",
                [Table([*header, "score is", "device"], table, caption, title="bench.csv")],
            )
        )
    return sections


def _contribution(row: dict[str, str]) -> str:
    value = number(row.get("vs_encoder_off"))
    if not math.isfinite(value):
        return "-"
    return f"{value:+.3f} {row.get('vs_encoder_off_ci95', '')}".strip()


def comparison_sections(evaluations: Sequence[Evaluation]) -> list[Section]:
    """Side-by-side comparison of evaluations of the same task (two or more)."""
    sections = []
    for task, build in (("segmentation", _compare_segmentation), ("classification", _compare_cls)):
        group = [e for e in evaluations if e.task == task]
        if len(group) >= 2:
            sections.append(build(group))
    return sections


_PAIRED_NOTE = (
    "Paired per-case differences (other - baseline, the first evaluation) on the cases both "
    "scored; two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, exact for small n) "
    f"after dropping zero differences; n/a with fewer than {MIN_WILCOXON} non-zero differences "
    "or when all are zero. p-values are not corrected for multiple comparisons."
)


def _compare_segmentation(evaluations: list[Evaluation]) -> Section:
    names = list(dict.fromkeys(n for e in evaluations for n in labels_of(e.summary).values()))
    keys = [{name: key for key, name in labels_of(e.summary).items()} for e in evaluations]
    rows = []
    for name in names:
        row = [name]
        for e, k in zip(evaluations, keys, strict=True):
            row.append(
                mean_ci(
                    summary_value(e.summary, "mean", k.get(name), "Dice"),
                    summary_value(e.summary, "ci95", k.get(name), "Dice"),
                )
            )
        rows.append(row)
    rows.append(
        [
            "foreground mean",
            *(
                mean_ci(
                    (e.summary.get("foreground_mean") or {}).get("Dice"),
                    (e.summary.get("ci95_foreground") or {}).get("Dice"),
                )
                for e in evaluations
            ),
        ]
    )
    blocks: list[Block] = [
        Table(
            ["class", *(f"{e.name} Dice" for e in evaluations)],
            rows,
            "Mean Dice [95% CI] per evaluation.",
        )
    ]
    base, base_keys = evaluations[0], keys[0]
    base_cases = {str(c.get("case")): c for c in base.summary.get("metric_per_case") or []}
    paired = []
    for other, other_keys in zip(evaluations[1:], keys[1:], strict=True):
        cases = {str(c.get("case")): c for c in other.summary.get("metric_per_case") or []}
        common = [c for c in base_cases if c in cases]
        shared = [n for n in names if n in base_keys and n in other_keys]
        differences = {
            name: [
                case_value(cases[c], other_keys[name], "Dice")
                - case_value(base_cases[c], base_keys[name], "Dice")
                for c in common
            ]
            for name in shared
        }
        differences["foreground mean"] = [
            case_mean(cases[c], [other_keys[n] for n in shared])
            - case_mean(base_cases[c], [base_keys[n] for n in shared])
            for c in common
        ]
        label = f"{other.name} - {base.name}"
        for name, d in differences.items():
            test = paired_test(d)
            paired.append(
                [label, name, str(test.n), fmt(test.mean, 4), fmt(test.median, 4), test.describe()]
            )
        if common:
            blocks.append(
                Figure(
                    f"compare_{other.name}_vs_{base.name}",
                    plots.paired_differences(differences, f"Dice: {label}"),
                    f"Per-case Dice differences {label} on {len(common)} common cases.",
                )
            )
    header = ["comparison", "class", "n", "mean diff", "median diff", "Wilcoxon signed-rank"]
    blocks[1:1] = [Table(header, paired, "Paired per-case Dice differences."), Text(_PAIRED_NOTE)]
    return Section("Comparison: segmentation", blocks)


def _compare_cls(evaluations: list[Evaluation]) -> Section:
    names = [
        m for m in CLS_METRICS if any(m in (e.summary.get("metrics") or {}) for e in evaluations)
    ]
    rows = [
        [
            m,
            *(
                mean_ci(
                    (e.summary.get("metrics") or {}).get(m), (e.summary.get("ci95") or {}).get(m)
                )
                for e in evaluations
            ),
        ]
        for m in names
    ]
    blocks: list[Block] = [
        Table(["metric", *(e.name for e in evaluations)], rows, "Value [95% CI] per evaluation.")
    ]
    base = _true_probability(evaluations[0])
    paired = []
    for other in evaluations[1:]:
        probs = _true_probability(other)
        common = [c for c in base if c in probs]
        test = paired_test([probs[c] - base[c] for c in common])
        paired.append(
            [
                f"{other.name} - {evaluations[0].name}",
                "p(true class)",
                str(test.n),
                fmt(test.mean, 4),
                fmt(test.median, 4),
                test.describe(),
            ]
        )
    header = [
        "comparison",
        "per-case score",
        "n",
        "mean diff",
        "median diff",
        "Wilcoxon signed-rank",
    ]
    blocks += [
        Table(header, paired, "Paired per-case probability of the true class (per_case.csv)."),
        Text(_PAIRED_NOTE),
    ]
    return Section("Comparison: grading", blocks)


def _true_probability(ev: Evaluation) -> dict[str, float]:
    return {
        row["case_id"]: number(row.get(f"prob_{row.get('true')}"))
        for row in ev.per_case
        if row.get("case_id")
    }
