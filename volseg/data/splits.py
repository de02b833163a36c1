"""Patient-level k-fold cross-validation splits, saved as nnU-Net's ``splits_final.json``.

All cases of one subject (``Case.patient``) fall in the same fold, so no patient is seen in
training and validation at once. Classification folds are stratified: each fold gets about the
same number of cases of every class.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from volseg.data.manifest import Case, Manifest
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path

Splits = list[dict[str, list[str]]]


def make_splits(manifest: Manifest, *, folds: int = 5, seed: int = 0) -> Splits:
    """Split the training cases into ``folds`` folds by subject.

    Subject groups are dealt greedily, largest first (ties in a seeded random order), each to
    the fold holding the fewest cases of the group's classes (classification), then the fewest
    cases overall. With one case per subject this gives per-class counts that differ by at most
    one between folds.

    Args:
        manifest: the dataset; only ``manifest.cases`` are split, test cases are left out.
        folds: number of folds, at least 2 and at most the number of subjects.
        seed: the same seed gives the same splits.

    Returns:
        ``[{"train": [ids], "val": [ids]}, ...]``, one entry per fold, ids in manifest order;
        every case is in exactly one ``val``.

    Raises:
        VolsegError: fewer subjects than folds, or ``folds`` < 2.
    """
    source = manifest.source or manifest.name
    if folds < 2:
        raise VolsegError(f"folds must be at least 2, got {folds}")
    groups: dict[str, list[Case]] = {}
    for case in manifest.cases:
        groups.setdefault(case.patient, []).append(case)
    if folds > len(groups):
        raise VolsegError(
            f"manifest {source} has {len(groups)} subjects, too few for {folds} folds; "
            "use fewer folds"
        )
    stratify = manifest.task == "classification"
    rng = random.Random(seed)
    order = list(groups)
    rng.shuffle(order)
    order.sort(key=lambda subject: -len(groups[subject]))  # stable: shuffled within a size
    per_class = [Counter[str | None]() for _ in range(folds)]
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for subject in order:
        cases = groups[subject]
        classes = Counter(case.target for case in cases) if stratify else Counter()
        rank = rng.sample(range(folds), folds)

        def cost(f: int, classes: Counter = classes, rank: list[int] = rank) -> tuple:
            overlap = sum(n * per_class[f][k] for k, n in classes.items())
            return overlap, sizes[f], rank[f]

        best = min(range(folds), key=cost)
        per_class[best].update(classes)
        sizes[best] += len(cases)
        fold_of[subject] = best
    return [
        {
            "train": [c.id for c in manifest.cases if fold_of[c.patient] != f],
            "val": [c.id for c in manifest.cases if fold_of[c.patient] == f],
        }
        for f in range(folds)
    ]


def save_splits(splits: Splits, path: str | Path) -> Path:
    """Write splits as nnU-Net-style JSON (``[{"train": [...], "val": [...]}, ...]``), atomically.

    Raises:
        VolsegError: the splits are malformed or a case is in train and val of one fold.
    """
    path = Path(path)
    problems = split_problems(splits)
    if problems:
        raise VolsegError(f"splits for {path} are invalid: {'; '.join(problems[:3])}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(splits, indent=2) + "\n")
    return path


def load_splits(path: str | Path, manifest: Manifest | None = None) -> Splits:
    """Read splits written by :func:`save_splits` or nnU-Net (``splits_final.json``).

    Args:
        path: the JSON file.
        manifest: when given, every id must be one of its training cases and no subject may
            be in both train and val of a fold.

    Raises:
        VolsegError: unreadable or malformed file, unknown ids, overlap or subject leakage;
            the message names the file.
    """
    path = Path(path)
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise VolsegError(f"{path}: cannot read splits ({e})") from None
    except json.JSONDecodeError as e:
        raise VolsegError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); fix it") from None
    problems = split_problems(splits, manifest)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise VolsegError(
            f"{path}: splits have {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
            f"{'; '.join(problems[:3])}{more}; fix the file or make new splits"
        )
    return splits


def split_problems(splits: object, manifest: Manifest | None = None) -> list[str]:
    """Everything wrong with ``splits``: structure, duplicates, train/val overlap and, given a
    manifest, unknown ids and subjects in both train and val of a fold."""
    if not isinstance(splits, list) or not splits:
        return ['splits must be a non-empty list of {"train": [...], "val": [...]}']
    patients = {c.id: c.patient for c in manifest.cases} if manifest is not None else None
    problems = []
    for f, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            problems.append(f'fold {f} must be {{"train": [...], "val": [...]}}')
            continue
        if not all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in fold.values()
        ):
            problems.append(f"fold {f}: train and val must be lists of case ids")
            continue
        train, val = fold["train"], fold["val"]
        if not val:
            problems.append(f"fold {f}: val is empty")
        for part, ids in (("train", train), ("val", val)):
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            if repeated:
                problems.append(f"fold {f}: {part} repeats ids {_few(repeated)}")
        both = sorted(set(train) & set(val))
        if both:
            problems.append(f"fold {f}: ids in both train and val: {_few(both)}")
        if patients is None:
            continue
        unknown = sorted({i for i in train + val if i not in patients})
        if unknown:
            problems.append(f"fold {f}: ids not in the manifest: {_few(unknown)}")
        leaked = {patients[i] for i in train if i in patients} & {
            patients[i] for i in val if i in patients
        }
        leaked -= {patients[i] for i in both}  # already reported as overlap
        if leaked:
            problems.append(f"fold {f}: subjects in both train and val: {_few(sorted(leaked))}")
    return problems


def _few(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")
