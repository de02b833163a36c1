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
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volseg.config import Config, load_config
from volseg.config.dump import save_config
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path

BENCH_COLUMNS = [
    "model",
    "task",
    "score",
    "score_name",
    "train_seconds",
    "seconds_per_volume",
    "peak_memory_mb",
    "device",
    "run",
]


@dataclass
class BenchModel:
    """One contender.

    Attributes:
        name: label in tables and folder names.
        config: training config YAML; empty: the config defaults (plus ``overrides``).
        overrides: ``key=value`` overrides on top of ``config``.
        run: an existing run folder or checkpoint to use instead of training.
    """

    name: str = ""
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    run: str | None = None


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
    """

    name: str = "bench"
    output_dir: str = "bench"
    test: str = ""
    models: list[BenchModel] = field(default_factory=list)
    tolerance_mm: float = 2.0
    tta: bool = False


def load_bench_config(path: str | Path, overrides: Sequence[str] = ()) -> BenchConfig:
    """Read and check a bench config (unknown keys and wrong types fail naming the key)."""
    cfg = load_config(BenchConfig, path, overrides)
    if not cfg.test:
        raise VolsegError(f"{path}: key 'test' must name the manifest of the cases to score")
    if not cfg.models:
        raise VolsegError(f"{path}: key 'models' lists no models")
    names = [m.name for m in cfg.models]
    for i, model in enumerate(cfg.models):
        if not model.name:
            raise VolsegError(f"{path}: models[{i}] needs a 'name'")
    if len(set(names)) != len(names):
        raise VolsegError(f"{path}: model names repeat: {names}")
    return cfg


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> Path:
    """Run every model of ``cfg``; returns the path of the report.

    Raises:
        VolsegError: a bad config, a failed prediction, or an unreadable test set.
    """
    from volseg.report import write_report

    out = Path(cfg.output_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "bench.yaml")
    rows = [_bench_model(model, cfg, out, progress=progress) for model in cfg.models]
    with atomic_path(out / "bench.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BENCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print_bench(rows)
    return write_report([out], out / "report", title=f"volseg bench: {cfg.name}")


def _bench_model(model: BenchModel, cfg: BenchConfig, out: Path, *, progress: bool) -> dict:
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
    else:
        summary = evaluate_classification(predictions / "predictions.csv", cfg.test, evaluation)
        score, score_name = summary["metrics"].get("AUC"), "AUC"
    return {
        "model": model.name,
        "task": task,
        "score": score,
        "score_name": score_name,
        "train_seconds": round(train_seconds, 1) if not model.run else "",
        "seconds_per_volume": round(sum(seconds) / max(len(seconds), 1), 3),
        "peak_memory_mb": max(
            (float(row["peak_memory_mb"]) for row in result.rows if row.get("peak_memory_mb")),
            default=float("nan"),
        ),
        "device": _device_name(),
        "run": str(run),
    }


def print_bench(rows: Sequence[dict[str, Any]]) -> None:
    """The bench table on stdout."""
    print(f"{'model':<18}{'score':>9}  {'s/volume':>9}{'peak MB':>10}  metric")
    for row in rows:
        score = "n/a" if row["score"] is None else f"{row['score']:.3f}"
        print(
            f"{row['model']:<18}{score:>9}  {row['seconds_per_volume']:>9}"
            f"{row['peak_memory_mb']:>10}  {row['score_name']} ({row['device']})"
        )


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
