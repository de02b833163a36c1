"""Find and read what the other stages wrote: evaluations, training runs, prediction folders.

A folder passed to ``volseg report`` may be one of these or hold them at any depth (a bench
or demo folder with ``runs/``, ``predictions/``, ``evaluation/``). Folders are recognised by
their files:

- evaluation (``volseg evaluate``): ``summary.json`` (and ``per_case.csv``);
- training run (``volseg train``): ``config.yaml`` with ``metrics.csv`` or ``metrics.jsonl``;
  ``params.json`` (parameter counts) and ``splits.json`` are read when present;
- predictions (``volseg predict``): ``timings.csv``;
- probe (``volseg probe``): ``probe.csv`` (and ``probe.json``);
- benchmark (``volseg bench``): ``bench.csv`` (and ``bench.yaml``, whose model order is the
  order of every table of the report: evaluations, runs and predictions of a bench are sorted
  by it, not by folder name).

Nothing heavy is loaded here: no checkpoint, no torch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volseg.errors import VolsegError
from volseg.metrics.summary_files import check_summary

SKIP_FOLDERS = {"checkpoints", "tensorboard", "cache", "figures", "__pycache__", "node_modules"}
MAX_DEPTH = 6
MANIFEST_NAMES = ("manifest.json", "dataset.json")
_NUMPY_REPR = re.compile(r"^np\.\w+\(([^()]*)\)$")


@dataclass
class Evaluation:
    """One ``volseg evaluate`` folder.

    Attributes:
        path: the folder.
        name: short display name, unique within the report.
        summary: ``summary.json`` as written (label keys are strings, NaN is None).
        per_case: rows of ``per_case.csv`` (strings), empty when the file is absent.
    """

    path: Path
    name: str
    summary: dict[str, Any]
    per_case: list[dict[str, str]] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.summary.get("task", ""))

    def resolve(self, value: str | None) -> Path | None:
        """An existing path recorded in the summary: as written, or relative to this folder."""
        return resolve_path(value, self.path)


@dataclass
class Run:
    """One training run folder: resolved config, logged rows, optional parameter counts."""

    path: Path
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, float]]
    params: dict[str, Any] | None = None
    splits: list[dict[str, list[str]]] | None = None


@dataclass
class Predictions:
    """One ``volseg predict`` output folder and its ``timings.csv`` rows (strings)."""

    path: Path
    name: str
    timings: list[dict[str, str]]


@dataclass
class Bench:
    """One ``volseg bench`` folder.

    Attributes:
        path: the folder.
        name: display name.
        rows: ``bench.csv`` rows (strings), one per model.
        models: model names in the config's order (``bench.yaml``; else bench.csv's rows).
        test: the held-out manifest every model was scored on (``bench.yaml`` key ``test``).
    """

    path: Path
    name: str
    rows: list[dict[str, str]]
    models: list[str]
    test: str = ""

    def rank(self, folder: Path) -> int | None:
        """Config position of the model a folder under this bench belongs to (the first
        part of its relative path named like a model: ``evaluation/<model>``), else None."""
        try:
            parts = folder.resolve().relative_to(self.path.resolve()).parts
        except ValueError:
            return None
        return next((self.models.index(p) for p in parts if p in self.models), None)


@dataclass
class Probe:
    """One ``volseg probe`` folder: ``probe.csv`` rows (strings) and ``probe.json`` less its
    rows (protocol, pooling, splits, grid; empty when the file is absent or unreadable)."""

    path: Path
    name: str
    rows: list[dict[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collection:
    """Everything found under the report's inputs: each kind in discovery order, except that
    the folders of a benchmark follow its config's model order."""

    inputs: list[Path]
    evaluations: list[Evaluation] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    predictions: list[Predictions] = field(default_factory=list)
    benches: list[Bench] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)


def collect(inputs: Sequence[str | Path]) -> Collection:
    """Discover and read every evaluation, run and prediction folder under ``inputs``.

    Also picks up the prediction folder an evaluation names in its summary when it holds a
    ``timings.csv``, so a report of an evaluation alone still shows the timings.

    Args:
        inputs: folders (or a ``summary.json`` / ``timings.csv`` / ``config.yaml`` file).

    Returns:
        The folders found, read; display names are paths relative to their common parent.

    Raises:
        VolsegError: an input that does not exist, an input holding none of the kinds,
            or an unreadable ``summary.json`` / ``config.yaml`` / table.
    """
    if not inputs:
        raise VolsegError("no folder given; pass evaluation, run or prediction folders")
    found: dict[Path, set[str]] = {}
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise VolsegError(
                f"{path}: not found; pass a folder that volseg evaluate, train or "
                "predict wrote (or one holding such folders)"
            )
        root = path.parent if path.is_file() else path
        kinds = list(_discover(root))
        if not kinds:
            raise VolsegError(
                f"{path}: holds no evaluation (summary.json), run (config.yaml + metrics.csv), "
                "prediction (timings.csv), bench (bench.csv) or probe (probe.csv) folder; run "
                "volseg evaluate/train/predict/bench/probe first"
            )
        for folder, kind in kinds:
            found.setdefault(folder.resolve(), set()).add(kind)
    for folder in [f for f, kinds in found.items() if "evaluation" in kinds]:
        linked = _prediction_folder(folder)
        if linked is not None:
            found.setdefault(linked.resolve(), set()).add("predictions")
    names = _display_names(list(found))
    out = Collection([Path(p) for p in inputs])
    for folder, kinds in found.items():
        if "evaluation" in kinds:
            out.evaluations.append(_read_evaluation(folder, names[folder]))
        if "run" in kinds:
            out.runs.append(_read_run(folder, names[folder]))
        if "predictions" in kinds:
            out.predictions.append(
                Predictions(folder, names[folder], read_csv(folder / "timings.csv"))
            )
        if "bench" in kinds:
            out.benches.append(_read_bench(folder, names[folder]))
        if "probe" in kinds:
            out.probes.append(_read_probe(folder, names[folder]))
    for kind in (out.evaluations, out.runs, out.predictions):
        kind.sort(key=lambda item: _bench_order(item.path, out.benches))
    return out


def resolve_path(value: str | None, base: Path) -> Path | None:
    """``value`` if it exists as written (absolute or relative to the working directory),
    else relative to ``base`` and its parents; None when nothing exists."""
    if not value:
        return None
    path = Path(value)
    if path.exists():
        return path
    if not path.is_absolute():
        for folder in (base, *base.parents):
            if (folder / path).exists():
                return folder / path
    return None


def manifest_path(value: str | None, base: Path) -> Path | None:
    """The manifest a recorded reference path points to (a manifest file, or a folder with
    ``manifest.json``/``dataset.json``); None for a folder of label maps or a missing path."""
    path = resolve_path(value, base)
    if path is None:
        return None
    if path.is_file() and path.suffix.lower() in (".json", ".csv"):
        return path
    if path.is_dir() and any((path / name).is_file() for name in MANIFEST_NAMES):
        return path
    return None


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as string dicts (empty cells are empty strings)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [
                {k: (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(f)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VolsegError(f"{path}: cannot read as CSV ({e}); rewrite it or leave it out") from None


def number(value: Any) -> float:
    """A float from a CSV cell or JSON value; NaN for empty, None or text.

    Cells written as a numpy repr (``np.float64(0.25)``, as some files hold) are read too.
    """
    if value is None or value == "":
        return math.nan
    if isinstance(value, str):
        match = _NUMPY_REPR.match(value.strip())
        value = match.group(1) if match else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --- discovery ---------------------------------------------------------------------------------


def _discover(root: Path, depth: int = 0) -> Iterator[tuple[Path, str]]:
    """(folder, kind) for every recognised folder under ``root``, breadth of one level first."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    names = {e.name for e in entries}
    if "summary.json" in names:
        yield root, "evaluation"
    if "config.yaml" in names and names & {"metrics.csv", "metrics.jsonl"}:
        yield root, "run"
    if "timings.csv" in names:
        yield root, "predictions"
    if "bench.csv" in names:
        yield root, "bench"
    if "probe.csv" in names:
        yield root, "probe"
    if depth >= MAX_DEPTH:
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name in SKIP_FOLDERS or entry.is_symlink():
            continue
        if entry.is_dir():
            yield from _discover(entry, depth + 1)


def _prediction_folder(evaluation: Path) -> Path | None:
    try:
        summary = json.loads((evaluation / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # reported when the summary is read for real
    path = resolve_path(
        summary.get("prediction") if isinstance(summary, dict) else None, evaluation
    )
    if path is not None and path.is_file():
        path = path.parent
    return path if path is not None and (path / "timings.csv").is_file() else None


def _display_names(folders: list[Path]) -> dict[Path, str]:
    """Each folder relative to the common parent of all (its own name when it is alone)."""
    if len(folders) == 1:
        return {folders[0]: folders[0].name or str(folders[0])}
    common = Path(os.path.commonpath([str(f) for f in folders]))
    names = {}
    for folder in folders:
        relative = folder.relative_to(common).as_posix()
        names[folder] = relative if relative != "." else folder.name
    return names


# --- reading -----------------------------------------------------------------------------------


def _read_evaluation(folder: Path, name: str) -> Evaluation:
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VolsegError(f"{path}: cannot read as JSON ({e}); re-run volseg evaluate") from None
    check_summary(summary, path)  # the keys and types the report reads
    per_case = folder / "per_case.csv"
    return Evaluation(folder, name, summary, read_csv(per_case) if per_case.is_file() else [])


def _read_run(folder: Path, name: str) -> Run:
    import yaml

    path = folder / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise VolsegError(f"{path}: cannot read as YAML ({e}); fix or remove it") from None
    if not isinstance(config, dict):
        raise VolsegError(f"{path}: is not a mapping of config keys; fix or remove it")
    return Run(
        folder,
        name,
        config,
        _read_metric_rows(folder),
        _read_json(folder / "params.json", dict),
        _read_json(folder / "splits.json", list),
    )


def _read_bench(folder: Path, name: str) -> Bench:
    import yaml

    rows = read_csv(folder / "bench.csv")
    try:
        config = yaml.safe_load((folder / "bench.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = None  # bench.csv alone still makes a leaderboard, in its own row order
    config = config if isinstance(config, dict) else {}
    models = [
        str(m["name"]) for m in config.get("models") or [] if isinstance(m, dict) and m.get("name")
    ]
    models += [r["model"] for r in rows if r.get("model") and r["model"] not in models]
    return Bench(folder, name, rows, models, str(config.get("test") or ""))


def _read_probe(folder: Path, name: str) -> Probe:
    try:
        meta = json.loads((folder / "probe.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = {}  # probe.csv alone still makes the table
    meta = {k: v for k, v in meta.items() if k != "rows"} if isinstance(meta, dict) else {}
    return Probe(folder, name, read_csv(folder / "probe.csv"), meta)


def _bench_order(folder: Path, benches: list[Bench]) -> tuple[int, int]:
    """Sort key: (bench, config position) for a bench's folders; others keep their place
    after them (the sort is stable)."""
    for b, bench in enumerate(benches):
        rank = bench.rank(folder)
        if rank is not None:
            return b, rank
    return len(benches), 0


def _read_metric_rows(folder: Path) -> list[dict[str, float]]:
    """Numeric columns of metrics.csv (or metrics.jsonl), one dict per logged row."""
    if (folder / "metrics.csv").is_file():
        rows: list[dict[str, Any]] = read_csv(folder / "metrics.csv")
    else:
        rows = []
        path = folder / "metrics.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise VolsegError(f"{path}: cannot read ({e}); fix or remove it") from None
        for line in lines:
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                continue  # a torn last line of an interrupted run
            if isinstance(row, dict):
                rows.append(row)
    numeric = []
    for row in rows:
        values = {k: number(v) for k, v in row.items() if not isinstance(v, (dict, list))}
        numeric.append({k: v for k, v in values.items() if not math.isnan(v)})
    return [row for row in numeric if row]


def _read_json(path: Path, kind: type) -> Any:
    """Optional JSON file of the expected top-level type; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, kind) else None
