"""The datasets behind a report and the role each played: training, held-out test, or both.

A run's ``data.manifest`` is its train / validation pool (split by fold); an evaluation's
reference and a benchmark's ``test`` manifest are held-out test sets. A dataset that is both
is said so, because scores on it are not held-out scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volseg.data import Manifest, load_manifest
from volseg.errors import VolsegError
from volseg.report.collect import Collection, Run, manifest_path, resolve_path
from volseg.report.render import Facts, Section, Table, Text

TRAIN, TEST, GIVEN = "train / validation", "held-out test", "given with --manifest"


@dataclass
class Dataset:
    """One dataset of the report.

    Attributes:
        path: the manifest (file or folder) as found.
        manifest: the loaded manifest, or None when it could not be read (``error`` says why).
        roles: (role, what for) pairs; role is :data:`TRAIN`, :data:`TEST` or :data:`GIVEN`.
    """

    path: Path
    manifest: Manifest | None
    error: str = ""
    roles: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest is not None else self.path.name

    @property
    def role(self) -> str:
        """The roles, in one phrase (``train / validation and held-out test`` when both)."""
        names = list(dict.fromkeys(role for role, _ in self.roles))
        return " and ".join(names) if names else "other"

    @property
    def leaks(self) -> bool:
        """True when the same data trained a model and was scored as a test set."""
        return {TRAIN, TEST} <= {role for role, _ in self.roles}


def find_datasets(collection: Collection, given: Manifest | None = None) -> list[Dataset]:
    """Every dataset the inputs name, each once (by resolved manifest path), with its roles."""
    found: list[Dataset] = []
    if given is not None:
        found.append(Dataset(given.source or Path(given.name), given))
    for run in collection.runs:
        data = _mapping(run.config, "data")
        path = resolve_path(str(data.get("manifest") or ""), run.path)
        if path is not None:
            _add(found, path, TRAIN, f"run {run.name}{split_text(run)}")
    for evaluation in collection.evaluations:
        path = manifest_path(evaluation.summary.get("reference"), evaluation.path)
        if path is not None:
            cases = evaluation.summary.get("n_cases")
            _add(found, path, TEST, f"evaluation {evaluation.name} ({cases} cases scored)")
    for bench in collection.benches:
        path = manifest_path(bench.test, bench.path)
        if path is not None:
            _add(found, path, TEST, f"benchmark {bench.name}: every model is scored on it")
    for dataset in found:
        if not dataset.roles:
            dataset.roles.append((GIVEN, "images of the overlays"))
    return found


def dataset_for(datasets: list[Dataset], value: str | None, base: Path) -> Dataset | None:
    """The dataset a recorded manifest path (relative to ``base``) points to."""
    path = manifest_path(value, base) or resolve_path(value, base)
    if path is None:
        return None
    key = _key(path)
    return next((d for d in datasets if _key(d.path) == key), None)


def dataset_sections(datasets: list[Dataset]) -> list[Section]:
    """'Datasets': a roles table, then the facts of every dataset."""
    if not datasets:
        return []
    rows = [
        [
            d.name,
            d.role,
            _cases(d.manifest) if d.manifest is not None else "n/a",
            str(d.path),
        ]
        for d in datasets
    ]
    blocks: list[Any] = [
        Table(
            ["dataset", "role", "cases", "manifest"],
            rows,
            "Role: train / validation = a run's data.manifest (split by fold); held-out test "
            "= the reference an evaluation or benchmark scored predictions against.",
            title="Datasets and their roles",
        )
    ]
    for d in datasets:
        if d.leaks:
            blocks.append(
                Text(
                    f"{d.name} ({d.path}) trained a model and was also scored as a test set: "
                    "those scores are not held-out scores.",
                    note=True,
                )
            )
    for d in datasets:
        if d.manifest is None:
            blocks.append(Text(f"dataset {d.path} could not be read: {d.error}", note=True))
            continue
        blocks.append(Facts(_facts(d), title=f"{d.name}: {d.role}"))
    return [Section("Datasets", blocks)]


def split_text(run: Run) -> str:
    """``, fold 0 of 4: 6 train / 2 validation cases`` from the run's config and splits.json."""
    data = _mapping(run.config, "data")
    fold, folds = data.get("fold"), data.get("folds")
    text = f", fold {fold} of {folds}" if fold is not None and folds is not None else ""
    if run.splits and isinstance(fold, int) and 0 <= fold < len(run.splits):
        entry = run.splits[fold]
        if isinstance(entry, dict):
            text += (
                f": {len(entry.get('train', []))} train / "
                f"{len(entry.get('val', []))} validation cases"
            )
    return text


def _add(found: list[Dataset], path: Path, role: str, what: str) -> None:
    key = _key(path)
    dataset = next((d for d in found if _key(d.path) == key), None)
    if dataset is None:
        path = path.resolve()  # a path recorded relative to where a command ran
        try:
            dataset = Dataset(path, load_manifest(path))
        except VolsegError as e:
            dataset = Dataset(path, None, str(e))
        found.append(dataset)
    dataset.roles.append((role, what))


def _key(path: Path) -> Path:
    """Manifest identity: a folder means the manifest.json / dataset.json inside it."""
    path = path.resolve()
    if path.is_dir():
        for name in ("manifest.json", "dataset.json"):
            if (path / name).is_file():
                return path / name
    return path


def _cases(manifest: Manifest) -> str:
    text = f"{len(manifest.cases)} labelled"
    return text + (f", {len(manifest.test_cases)} unlabelled" if manifest.test_cases else "")


def _facts(d: Dataset) -> list[tuple[str, str]]:
    manifest = d.manifest
    assert manifest is not None
    uses: dict[str, list[str]] = {}
    for role, what in d.roles:
        uses.setdefault(role, []).append(what)
    items = [("role", "; ".join(f"{role}: {', '.join(whats)}" for role, whats in uses.items()))]
    items += [
        ("task", manifest.task),
        ("manifest", f"{manifest.source or d.path} ({manifest.format})"),
        ("modalities", ", ".join(manifest.modalities) or "n/a"),
        ("cases", _cases(manifest)),
    ]
    if manifest.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(manifest.labels.items()) if k)
        items.append(("labels", labels))
    if manifest.classes:
        counts = {c: sum(case.target == c for case in manifest.cases) for c in manifest.classes}
        items.append(("classes", ", ".join(f"{c} ({n} cases)" for c, n in counts.items())))
    for key in ("description", "reference", "license"):
        if manifest.info.get(key):
            items.append((key, str(manifest.info[key])))
    return items


def _mapping(parent: dict, key: str) -> dict:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}
