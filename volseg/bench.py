"""``volseg bench``: train (or reuse), predict, evaluate and time several models on one test set.

A bench config is YAML read with the same typed loader as training configs::

    name: organs_bench
    output_dir: bench
    test: data/synthetic/organs_test/manifest.json    # held-out cases, predicted and scored
    models:
      - name: vits_frozen
        config: configs/synthetic_organs.yaml
      - name: vits_lora
        config: configs/synthetic_organs.yaml
        overrides: [model.encoder.mode=lora]
      - name: unet
        config: configs/synthetic_organs.yaml
        overrides: [model.encoder.name=none, model.head.name=monai_unet]

Each model is trained by the same engine (``volseg train``), or taken from ``run`` when given;
every model predicts the same cases through ``volseg predict``'s code, is scored by
``volseg evaluate``'s code, and the report compares them (paired per-case tests included).
The folder gets ``runs/``, ``predictions/<model>/``, ``evaluation/<model>/``, ``bench.csv``
(quality, seconds per volume, peak memory per model) and ``report/``.

**Probes.** ``probes:`` lists ``volseg probe`` runs (a config and overrides, ``protocol``
knn / linear / fewshot, ``shots``, ``seeds``): the seed papers' protocols on frozen features,
each scored on the held-out fold of its own config's manifest. They land in
``probes/<name>/`` with ``probes.csv`` gathering their rows, and the report's Probes table.

**The encoder's contribution.** A bench should carry the row that removes the encoder: for
segmentation the same head on the image alone (``model.encoder.name=none`` with the ``pyramid``
head; :func:`volseg.models.build.image_only`), for grading the ``size`` head (the tumour's
volume, no encoder; a grading row's contribution is its AUC minus that row's on the same test
cases, with a paired bootstrap CI). That row is found in the models' configs (or
named by ``encoder_off``; a model's own ``encoder_off`` pairs it with another row, e.g. the
encoder-off model trained on the same cases), and every other segmentation model (an
encoder-off row only when it names its own ``encoder_off``) gets
``vs_encoder_off``: the mean over test cases of its per-case foreground mean Dice minus its
encoder-off model's on the same case, with a paired bootstrap 95% CI over cases
(``vs_encoder_off_ci95``), so a table says what the encoder added, not only what the whole
model scored.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volseg.config import Config, load_config
from volseg.config.dump import save_config
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path
from volseg.metrics.contribution import add_encoder_contribution

BENCH_COLUMNS = [
    "model",
    "task",
    "score",
    "score_name",
    "score_ci95",
    "train_seconds",
    "seconds_per_volume",
    "peak_memory_mb",
    "device",
    "run",
    "vs_encoder_off",
    "vs_encoder_off_ci95",
]


@dataclass
class BenchModel:
    """One contender.

    Attributes:
        name: label in tables and folder names.
        config: training config YAML; empty: the config defaults (plus ``overrides``).
        overrides: ``key=value`` overrides on top of ``config``.
        run: an existing run folder or checkpoint to use instead of training.
        encoder_off: the model this one's encoder contribution is measured against (e.g.
            the encoder-off row trained on the same cases); empty: the bench's.
    """

    name: str = ""
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    run: str | None = None
    encoder_off: str = ""


@dataclass
class BenchProbe:
    """One ``volseg probe`` run on frozen features (the seed papers' protocols).

    Attributes:
        name: label in tables and the folder name under ``probes/``.
        config: training config YAML (its data, encoder and folds); empty: the defaults.
        overrides: ``key=value`` overrides on top of ``config``.
        protocol: ``knn``, ``linear`` or ``fewshot``.
        shots: few-shot ``n`` per class.
        seeds: few-shot draws per ``n``.
    """

    name: str = ""
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    protocol: str = "knn"
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: int = 5


@dataclass
class BenchConfig:
    """A benchmark.

    Attributes:
        name: benchmark name (the output folder under ``output_dir``).
        output_dir: parent folder of the benchmark folder.
        test: manifest of the held-out cases every model predicts and is scored on.
        models: the contenders.
        tolerance_mm: NSD tolerance for segmentation.
        tta: flip test-time augmentation for every model.
        encoder_off: the model every other one is compared with for the encoder's
            contribution; empty: the first model trained as the encoder-off ablation
            (``model.encoder.name=none`` with the ``pyramid`` head), if any.
        probes: ``volseg probe`` runs; each scores the held-out fold of its own config's
            manifest (``volseg probe``'s splits), not ``test``.
    """

    name: str = "bench"
    output_dir: str = "bench"
    test: str = ""
    models: list[BenchModel] = field(default_factory=list)
    tolerance_mm: float = 2.0
    tta: bool = False
    encoder_off: str = ""
    probes: list[BenchProbe] = field(default_factory=list)


def load_bench_config(path: str | Path, overrides: Sequence[str] = ()) -> BenchConfig:
    """Read and check a bench config (unknown keys and wrong types fail naming the key)."""
    from volseg.probe.run import PROTOCOLS

    cfg = load_config(BenchConfig, path, overrides)
    if not cfg.models and not cfg.probes:
        raise VolsegError(f"{path}: keys 'models' and 'probes' list nothing to run")
    if cfg.models and not cfg.test:
        raise VolsegError(f"{path}: key 'test' must name the manifest of the cases to score")
    probe_names = [p.name for p in cfg.probes]
    for i, probe in enumerate(cfg.probes):
        if not probe.name:
            raise VolsegError(f"{path}: probes[{i}] needs a 'name'")
        if probe.protocol not in PROTOCOLS:
            raise VolsegError(
                f"{path}: key 'probes[{i}].protocol' is {probe.protocol!r}; use one of "
                f"{', '.join(PROTOCOLS)}"
            )
        if probe.seeds < 1 or not probe.shots or min(probe.shots) < 1:
            raise VolsegError(
                f"{path}: probes[{i}] needs seeds >= 1 and shots of at least 1 per class"
            )
    if len(set(probe_names)) != len(probe_names):
        raise VolsegError(f"{path}: probe names repeat: {probe_names}")
    names = [m.name for m in cfg.models]
    for i, model in enumerate(cfg.models):
        if not model.name:
            raise VolsegError(f"{path}: models[{i}] needs a 'name'")
    if len(set(names)) != len(names):
        raise VolsegError(f"{path}: model names repeat: {names}")
    keys = [("encoder_off", cfg.encoder_off)]
    keys += [(f"models[{i}].encoder_off", m.encoder_off) for i, m in enumerate(cfg.models)]
    for key, value in keys:
        if value and value not in names:
            raise VolsegError(
                f"{path}: key '{key}' names {value!r}, which is not a model ({', '.join(names)})"
            )
    return cfg


def select(cfg: BenchConfig, names: Sequence[str], path: str | Path) -> BenchConfig:
    """``cfg`` with only the models and probes ``names`` (``--only``), in the config's order.

    Raises:
        VolsegError: no name given, or a name that is neither a model nor a probe.
    """
    known = [m.name for m in cfg.models] + [p.name for p in cfg.probes]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise VolsegError(
            f"{path}: --only names {', '.join(unknown) or 'nothing'}, not a model or probe "
            f"of the config; choose from {', '.join(known)}"
        )
    models = [m for m in cfg.models if m.name in names]
    if models and not cfg.test:
        raise VolsegError(f"{path}: key 'test' must name the manifest of the cases to score")
    probes = [p for p in cfg.probes if p.name in names]
    return dataclasses.replace(cfg, models=models, probes=probes)


def _is_encoder_off(model: BenchModel) -> bool:
    """Whether ``model`` is trained here as the encoder-off ablation (the pyramid head on the
    image alone, or the grading ``size`` head: the tumour's volume, no encoder)."""
    from volseg.models.build import encoder_off

    if model.run:
        return False
    return encoder_off(load_config(Config, model.config or None, model.overrides).model)


def encoder_off_model(cfg: BenchConfig) -> str:
    """The name of the encoder-off row of ``cfg`` (``encoder_off``, else the first model
    whose config is the encoder-off ablation), or ``""`` when the bench has none."""
    return _bench_encoder_off(cfg, _encoder_off_rows(cfg))


def _encoder_off_rows(cfg: BenchConfig) -> list[str]:
    return [model.name for model in cfg.models if _is_encoder_off(model)]


def _bench_encoder_off(cfg: BenchConfig, ablations: Sequence[str]) -> str:
    return cfg.encoder_off or (ablations[0] if ablations else "")


def encoder_off_pairs(cfg: BenchConfig) -> dict[str, str]:
    """Model -> the model its encoder contribution is measured against: its own
    ``encoder_off``, else the bench's encoder-off row; ``""`` for an encoder-off row without
    its own ``encoder_off`` (removing the encoder from a model that has none says nothing)."""
    ablations = _encoder_off_rows(cfg)
    off = _bench_encoder_off(cfg, ablations)
    return {m.name: m.encoder_off or ("" if m.name in ablations else off) for m in cfg.models}


def run_bench(cfg: BenchConfig, *, progress: bool = True, order: Sequence[str] = ()) -> Path:
    """Run every model of ``cfg``; returns the path of the report.

    ``order`` names every model of the whole config when ``cfg`` is a selection (``--only``):
    the rows an earlier run wrote to ``bench.csv`` for the models not run now are kept, in that
    order, so a partial rerun updates the table instead of replacing it.

    Raises:
        VolsegError: a bad config, a failed prediction, or an unreadable test set.
    """
    from volseg.report import write_report

    out = Path(cfg.output_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "bench.yaml")
    if cfg.models:
        pairs = encoder_off_pairs(cfg)
        results = [_bench_model(model, cfg, out, progress=progress) for model in cfg.models]
        rows = [row for row, _ in results]
        add_encoder_contribution(rows, {row["model"]: s for row, s in results}, pairs)
        print_bench(rows)
        rows = merge_rows(out / "bench.csv", rows, order)
        with atomic_path(out / "bench.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=BENCH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    if cfg.probes:
        from volseg.probe.bench import run_bench_probes

        run_bench_probes(cfg.probes, out, progress=progress)
    return write_report([out], out / "report", title=f"volseg bench: {cfg.name}")


def merge_rows(
    path: Path, rows: Sequence[dict[str, Any]], order: Sequence[str]
) -> list[dict[str, Any]]:
    """``rows`` plus the rows of ``path`` (an earlier ``bench.csv``) for the models of ``order``
    that ``rows`` lacks, in ``order`` (``rows`` alone when ``order`` is empty or no file)."""
    if not order or not path.is_file():
        return list(rows)
    with open(path, newline="") as f:
        earlier = {row["model"]: row for row in csv.DictReader(f) if row.get("model")}
    fresh = {row["model"]: row for row in rows}
    merged = [fresh.get(name) or earlier.get(name) for name in order]
    return [row for row in merged if row is not None] + [r for r in rows if r["model"] not in order]


def _bench_model(
    model: BenchModel, cfg: BenchConfig, out: Path, *, progress: bool
) -> tuple[dict, dict]:
    from volseg.engine.train import run_training
    from volseg.inference import InferenceOptions, predict_cohort
    from volseg.metrics import evaluate_classification, evaluate_segmentation

    started = time.perf_counter()
    if model.run:
        run: Path = Path(model.run)
    else:
        overrides = [*model.overrides, f"output_dir={out / 'runs'}", f"name={model.name}"]
        config = load_config(Config, model.config or None, overrides)
        run = run_training(config, progress=progress, stop_raises=True)  # Ctrl-C ends the bench
    train_seconds = time.perf_counter() - started
    predictions = out / "predictions" / model.name
    result = predict_cohort(
        run, cfg.test, predictions, options=InferenceOptions(tta=cfg.tta), progress=progress
    )
    if result.exit_code:
        failed = ", ".join(row["case_id"] for row in result.failed)
        raise VolsegError(f"bench model {model.name}: prediction failed for {failed}")
    evaluation = out / "evaluation" / model.name
    seconds = [float(row["total"]) for row in result.rows if row["status"] == "ok"]
    task = "classification" if (predictions / "predictions.csv").is_file() else "segmentation"
    if task == "segmentation":
        summary = evaluate_segmentation(
            predictions, cfg.test, evaluation, tolerance_mm=cfg.tolerance_mm, workers=1
        )
        score, score_name = summary["foreground_mean"].get("Dice"), "foreground mean Dice"
        ci = (summary.get("ci95_foreground") or {}).get("Dice")
    else:
        summary = evaluate_classification(predictions / "predictions.csv", cfg.test, evaluation)
        with open(evaluation / "per_case.csv", newline="") as f:
            summary = {**summary, "per_case": list(csv.DictReader(f))}  # for the paired AUC
        score, score_name = summary["metrics"].get("AUC"), "AUC"
        ci = (summary.get("ci95") or {}).get("AUC")
    row = {
        "model": model.name,
        "task": task,
        "score": score,
        "score_name": score_name,
        "score_ci95": _format_ci(ci),
        "train_seconds": round(train_seconds, 1) if not model.run else "",
        "seconds_per_volume": round(sum(seconds) / max(len(seconds), 1), 3),
        "peak_memory_mb": max(
            (float(row["peak_memory_mb"]) for row in result.rows if row.get("peak_memory_mb")),
            default=float("nan"),
        ),
        "device": _device_name(),
        "run": str(run),
        "vs_encoder_off": "",
        "vs_encoder_off_ci95": "",
    }
    return row, summary


def _format_ci(ci: Sequence[float] | None) -> str:
    """``[lo, hi]`` of a bootstrap CI to 3 decimals; ``""`` where none was computed."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{float(ci[0]):.3f}, {float(ci[1]):.3f}]"


def print_bench(rows: Sequence[dict[str, Any]]) -> None:
    """The bench table on stdout (with the encoder's contribution when the bench has the
    encoder-off row)."""
    contribution = any(row.get("vs_encoder_off") != "" for row in rows)
    extra = f"  {'vs encoder off [95% CI]':<30}" if contribution else ""
    print(
        f"{'model':<18}{'score':>9} {'[95% CI]':<16}{'s/volume':>9}{'peak MB':>10}{extra}  metric"
    )
    for row in rows:
        score = "n/a" if row["score"] is None else f"{row['score']:.3f}"
        ci = row.get("score_ci95") or "-"
        if contribution:
            delta = row.get("vs_encoder_off")
            cell = f"{delta:+.3f} {row['vs_encoder_off_ci95']}" if delta != "" else "-"
            extra = f"  {cell:<30}"
        print(
            f"{row['model']:<18}{score:>9} {ci:<16}{row['seconds_per_volume']:>9}"
            f"{row['peak_memory_mb']:>10}{extra}  {row['score_name']} ({row['device']})"
        )


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
