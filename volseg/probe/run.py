"""``volseg probe``: kNN, linear and few-shot protocols on a config's frozen features.

The cases are split by the config's own split machinery (:func:`volseg.engine.plan.make_plan`:
``data.splits`` or patient-level, stratified folds from ``data.folds`` and ``seed``). Manifest
test cases carry no labels, so the probe's test split is formed from the folds: **test** is
the validation fold ``data.fold``, **val** the next fold (``data.fold + 1``, wrapping round),
**train** every other fold. Each case is in one split only, and so is each patient.

- ``knn``: weighted kNN (:mod:`volseg.probe.knn`) on the last block's CLS token (grading) or
  patch token (segmentation), fitted on train + val (it has nothing to select), one row per
  ``k`` in 10/20/100/200 (capped at the rows there are).
- ``linear``: the grid of :mod:`volseg.probe.linear`, chosen on val, retrained on train + val,
  scored once on test.
- ``fewshot``: for each ``n`` in ``shots`` and each of ``seeds`` seeds, ``n`` training rows per
  class (:mod:`volseg.probe.fewshot`); the linear grid trained on them, its cell chosen on val,
  scored on test; mean, CI and the spread across seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.config.schema import Config
from volseg.engine.plan import Plan, make_plan
from volseg.errors import VolsegError
from volseg.probe.features import ProbeFeatures, extract_features, views_of
from volseg.probe.fewshot import DEFAULT_SHOTS, sample_shots
from volseg.probe.knn import capped_ks, knn_probabilities
from volseg.probe.linear import select_and_refit
from volseg.probe.table import (
    format_table,
    grading_scores,
    patch_scores,
    score_predictions,
    table_rows,
    write_tables,
)

PROTOCOLS = ("knn", "linear", "fewshot")


def probe_splits(plan: Plan) -> dict[str, list[str]]:
    """Train, val and test case ids from the plan's folds (see the module docstring).

    Raises:
        VolsegError: fewer than 3 folds, or a split without cases.
    """
    folds, f = plan.splits, plan.config.data.fold
    if len(folds) < 3:
        raise VolsegError(
            f"volseg probe needs at least 3 folds (test, val, train) but the splits have "
            f"{len(folds)}; set data.folds=3 or more"
        )
    test = list(folds[f]["val"])
    val = [i for i in folds[(f + 1) % len(folds)]["val"] if i not in test]
    taken = set(test) | set(val)
    split = {i for fold in folds for i in fold["train"] + fold["val"]}
    train = [c.id for c in plan.manifest.cases if c.id in split and c.id not in taken]
    for name, ids in (("train", train), ("val", val), ("test", test)):
        if not ids:
            raise VolsegError(f"the probe's {name} split is empty; use more cases or folds")
    return {"train": train, "val": val, "test": test}


def run_probe(
    config: Config,
    *,
    protocol: str,
    out: str | Path,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: int = 5,
    progress: bool = True,
) -> tuple[Path, list[dict]]:
    """Run one protocol and write ``out/probe.csv`` and ``out/probe.json``.

    Args:
        config: the resolved config (its data, encoder and split settings).
        protocol: ``knn``, ``linear`` or ``fewshot``.
        out: output folder (created); features are cached in ``train.cache_dir`` or
            ``out/cache``.
        shots: few-shot ``n`` per class.
        seeds: few-shot draws per ``n``.
        progress: progress bar while extracting features.

    Returns:
        ``(path of probe.csv, the table rows)``.

    Raises:
        VolsegError: an unknown protocol, bad seeds or shots, bad config or data.
    """
    if protocol not in PROTOCOLS:
        raise VolsegError(f"--protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if seeds < 1:
        raise VolsegError(f"--seeds {seeds} must be at least 1")
    out = Path(out)
    plan = make_plan(config)
    splits = probe_splits(plan)
    cache = Path(config.train.cache_dir) if config.train.cache_dir else out / "cache"
    features = extract_features(plan, cache_dir=cache, progress=progress)
    idx = {name: features.rows(ids) for name, ids in splits.items()}
    enc = config.model.encoder
    common = {
        "task": plan.task,
        "encoder": enc.name,
        "weights": "random" if enc.weights is None else str(enc.weights),
        "n_val": int(idx["val"].size),
        "n_test": int(idx["test"].size),
    }
    meta: dict = {
        "protocol": protocol,
        "task": plan.task,
        "encoder": enc.name,
        "weights": common["weights"],
        "classes": features.classes,
        "pooling": features.pooling,
        "splits": splits,
        "split_rule": "test = validation fold data.fold, val = the next fold, train = the rest",
    }
    if protocol == "knn":
        rows = _knn(features, idx, common)
    elif protocol == "linear":
        rows, meta["grid"] = _linear(features, idx, common, seed=config.seed)
    else:
        rows, meta["grids"] = _fewshot(features, idx, common, shots, seeds, config.seed)
    path, _ = write_tables(out, rows, meta)
    if progress:
        print(format_table(rows))
    return path, rows


def _score(features: ProbeFeatures, test: np.ndarray, probs: list[np.ndarray]) -> dict:
    return score_predictions(
        features.task, features.labels[test], features.groups[test], probs,
        len(features.classes),
    )  # fmt: skip


def _selection_score(features: ProbeFeatures):
    """``(y, probs) -> (balanced accuracy, AUC or patch Dice)`` for picking a grid cell."""

    def score(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
        if features.task == "classification":
            s = grading_scores(y, probs)
            return s["balanced_accuracy"], s["AUC"]
        from volseg.metrics import confusion_matrix

        s = patch_scores(confusion_matrix(y, probs.argmax(1), len(features.classes)))
        return s["balanced_accuracy"], s["patch_dice"]

    return score


def _knn(features: ProbeFeatures, idx: dict, common: dict) -> list[dict]:
    view = views_of(features.task, 1)[0]
    x, y = features.views[view], features.labels
    fit = np.concatenate([idx["train"], idx["val"]])
    rows = []
    for k in capped_ks(fit.size):
        probs = knn_probabilities(
            x[fit], y[fit], x[idx["test"]], k=k, n_classes=len(features.classes)
        )
        setting = {"protocol": "knn", "setting": f"k={k}", "view": view, "k": k}
        setting |= {**common, "n_train": int(fit.size)}
        rows += table_rows(setting, _score(features, idx["test"], [probs]))
    return rows


def _linear(features: ProbeFeatures, idx: dict, common: dict, *, seed: int):
    cell, grid = select_and_refit(
        features.views, features.labels, len(features.classes),
        train=idx["train"], val=idx["val"], score=_selection_score(features), seed=seed,
    )  # fmt: skip
    probs = cell.probabilities(features.views[cell.view][idx["test"]])
    setting = {
        "protocol": "linear", "setting": f"{cell.view}, lr={cell.lr:g}", "view": cell.view,
        "lr": cell.lr, **common, "n_train": int(idx["train"].size + idx["val"].size),
    }  # fmt: skip
    return table_rows(setting, _score(features, idx["test"], [probs])), grid


def _fewshot(
    features: ProbeFeatures, idx: dict, common: dict, shots: Sequence[int], seeds: int, base: int
):
    rows, grids = [], {}
    for n in shots:
        probs, chosen = [], []
        for s in range(seeds):
            train = sample_shots(features.labels, idx["train"], n, base + s, features.classes)
            cell, grid = select_and_refit(
                features.views, features.labels, len(features.classes), train=train,
                val=idx["val"], score=_selection_score(features), refit=False, seed=base + s,
            )  # fmt: skip
            probs.append(cell.probabilities(features.views[cell.view][idx["test"]]))
            chosen.append(f"{cell.view}, lr={cell.lr:g}")
            grids[f"{n}-shot seed {base + s}"] = {"chosen": chosen[-1], "grid": grid}
        setting = {
            "protocol": "fewshot", "setting": f"{n}-shot, linear", "shots": n, "seeds": seeds,
            **common, "n_train": n * len(features.classes),
        }  # fmt: skip
        rows += table_rows(setting, _score(features, idx["test"], probs))
    return rows, grids
