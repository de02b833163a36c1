"""``volseg report``: one report.html (self-contained) and report.md (+ figures/) from folders.

The page opens with a headline per result (task, data, model, encoder weights, main score
and 95% CI; :mod:`volseg.report.headline`) and the warnings (random encoder weights). Then
the sections, each skipped when its files are absent: the inputs found, a benchmark's
leaderboard, the datasets and their roles, the model of every run (encoder, mode, parameter
counts), the results of every evaluation (per-class tables with mean +- std, median and 95%
CI; box plots; per-case table; overlays of the best, median and worst case; for grading the
ROC curves and confusion matrix), a side-by-side comparison when several evaluations of one
task are given (paired per-case differences, Wilcoxon signed-rank test), training curves,
timing and peak memory, and the environment.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from volseg.data import Manifest, load_manifest
from volseg.io import atomic_path
from volseg.report.collect import Collection, collect
from volseg.report.compare import comparison_sections, leaderboard_sections
from volseg.report.datasets import Dataset, dataset_sections, find_datasets
from volseg.report.environment import environment
from volseg.report.headline import header_warnings, headlines
from volseg.report.probe import probe_sections
from volseg.report.render import (
    FIGURE_DIR,
    Facts,
    Section,
    Table,
    figures,
    render_html,
    render_markdown,
)
from volseg.report.results import evaluation_sections
from volseg.report.runs import model_section, training_sections
from volseg.report.timing import timing_sections


def write_report(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Build the report of evaluation, run and prediction folders into ``out_dir``.

    Writes ``report.html`` (self-contained: CSS inline, PNGs embedded, opens offline),
    ``report.md`` and the PNGs it links in ``figures/``, each file atomically; PNGs left in
    ``figures/`` by an earlier report that this one does not use are removed.

    Args:
        inputs: folders written by ``volseg evaluate``/``train``/``predict``, or folders
            holding them (found at any depth). Several evaluations of one task are compared
            side by side, the first being the baseline.
        out_dir: output folder (created).
        manifest: dataset manifest, used to describe the dataset and to find the images of
            the overlays when the evaluation's reference was not a manifest.
        title: report title (default ``"volseg report"``).

    Returns:
        The path of ``report.html``.

    Raises:
        VolsegError: an input that is missing or holds nothing to report, an unreadable
            summary/config, or an unreadable ``manifest``.
    """
    collection = collect(inputs)
    given = load_manifest(manifest) if manifest is not None else None
    datasets = find_datasets(collection, given)
    sections = build_sections(collection, given, datasets)
    warnings = header_warnings(collection)
    top = headlines(collection, datasets)
    title = title or "volseg report"
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle = f"Made {date} from {', '.join(str(p) for p in collection.inputs)}."
    out_dir = Path(out_dir)
    figure_dir = out_dir / FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = set()
    for figure in figures(sections):
        with atomic_path(figure_dir / f"{figure.name}.png") as tmp:
            tmp.write_bytes(figure.png)
        written.add(f"{figure.name}.png")
    for stale in figure_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(render_markdown(title, subtitle, sections, warnings, top), encoding="utf-8")
    html_path = out_dir / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(title, subtitle, sections, warnings, top), encoding="utf-8")
    return html_path


def build_sections(
    collection: Collection,
    manifest: Manifest | None = None,
    datasets: list[Dataset] | None = None,
) -> list[Section]:
    """Every section of the report below the headline, in reading order; sections without
    data are left out. ``datasets`` default to :func:`find_datasets` of the collection."""
    if datasets is None:
        datasets = find_datasets(collection, manifest)
    sections = [_inputs_section(collection)]
    sections += leaderboard_sections(collection.benches)
    sections += probe_sections(collection.probes)
    sections += dataset_sections(datasets)
    sections += [model_section(run) for run in collection.runs]
    for task in ("segmentation", "classification"):
        for evaluation in [e for e in collection.evaluations if e.task == task]:
            sections += evaluation_sections(evaluation, manifest)
    sections += comparison_sections(collection.evaluations)
    sections += training_sections(collection.runs)
    sections += timing_sections(collection.predictions, collection.runs)
    sections.append(
        Section(
            "Environment",
            [
                Facts(
                    environment(),
                    "The machine and software that made this report (training and prediction "
                    "may have run elsewhere).",
                )
            ],
        )
    )
    return sections


# --- inputs and dataset ------------------------------------------------------------------------


def _inputs_section(collection: Collection) -> Section:
    rows = [["evaluation", e.name, str(e.path)] for e in collection.evaluations]
    rows += [["training run", r.name, str(r.path)] for r in collection.runs]
    rows += [["predictions", p.name, str(p.path)] for p in collection.predictions]
    rows += [["benchmark", b.name, str(b.path)] for b in collection.benches]
    rows += [["probe", p.name, str(p.path)] for p in collection.probes]
    return Section("Inputs", [Table(["kind", "name", "folder"], rows)])
