"""Subcommands of ``volseg``. Each parses its options and calls one Python function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from volseg.cli.evaluate import register_evaluate
from volseg.cli.main import add_command
from volseg.cli.predict import register_predict
from volseg.cli.report import register_report
from volseg.cli.train import register_train


def register_synth(sub: argparse._SubParsersAction) -> None:
    from volseg.synth import SIZES

    sizes = ", ".join(f"{name} {x}x{y}x{z}" for name, (x, y, z) in SIZES.items())
    p = add_command(
        sub,
        "synth",
        "Write synthetic datasets: CT-like abdominal organ phantoms and multi-modal glioma MRI.",
        "Deterministic by --seed: the same seed and options give byte-identical volumes, and\n"
        "case k does not depend on --cases. Each dataset goes to OUT/<dataset>/ as NIfTI\n"
        "(imagesTr/, labelsTr/) with a volseg manifest.json and the parameters in synth.json.\n"
        "OUT/<dataset>/ must be new or empty; --overwrite replaces an earlier synth output\n"
        "there, deleting only the files its manifest.json lists, the manifest and synth.json\n"
        "(a folder without synth.json is never touched). Volumes hold at most 512^3 voxels.\n\n"
        f"Sizes (X x Y x Z voxels): {sizes}.\n\n"
        "examples:\n"
        "  volseg synth --out data/synthetic\n"
        "  volseg synth --dataset glioma --cases 40 --size small --grades 3 --seed 7\n"
        "  volseg synth --dataset organs --shape 256 256 100 --cases 4",
    )
    p.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder")
    p.add_argument(
        "--dataset",
        choices=["organs", "glioma", "abdomen", "both"],
        default="both",
        help="which dataset (both = organs + glioma; abdomen is the held-out CT benchmark set)",
    )
    p.add_argument("--cases", type=int, default=16, help="cases per dataset (default 16)")
    p.add_argument(
        "--size", choices=sorted(SIZES), default="small", help="preset volume size (default small)"
    )
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="explicit size; overrides --size",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--grades", type=int, choices=[2, 3], default=2, help="glioma grade classes (default 2)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synth output in OUT/<dataset>/ (only the files it wrote)",
    )
    p.set_defaults(run=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from volseg.synth import SIZES, synthesize_glioma, synthesize_organs
    from volseg.synth.output import check_folder, check_request, prepare_folder

    shape = tuple(args.shape) if args.shape else SIZES[args.size]
    check_request(shape, args.cases)
    datasets = {"both": ["organs", "glioma"]}.get(args.dataset, [args.dataset])
    folders = [args.out / name for name in datasets]
    for folder in folders:  # all checked before any is cleared
        check_folder(folder, overwrite=args.overwrite)
    for folder in folders:
        prepare_folder(folder, overwrite=args.overwrite)
    written = []
    if args.dataset in ("organs", "both"):
        written.append(
            synthesize_organs(args.out / "organs", cases=args.cases, shape=shape, seed=args.seed)
        )
    if args.dataset in ("glioma", "both"):
        written.append(
            synthesize_glioma(
                args.out / "glioma",
                cases=args.cases,
                shape=shape,
                seed=args.seed,
                grades=args.grades,
            )
        )
    if args.dataset == "abdomen":
        from volseg.synth import synthesize_abdomen

        written.append(
            synthesize_abdomen(args.out / "abdomen", cases=args.cases, shape=shape, seed=args.seed)
        )
    for manifest in written:
        print(f"wrote {manifest}")
    return 0


def register_check(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "check",
        "Validate a dataset manifest and optionally write patient-level k-fold splits.",
        "MANIFEST is a volseg manifest.json, an MSD dataset.json, an nnU-Net v2 raw dataset\n"
        "folder, or a CSV for classification. Every problem case is reported at once (missing\n"
        "files, duplicate ids, unknown label values, image/label geometry mismatch, missing\n"
        "modalities); the exit status is 2 if there is any.\n\n"
        "examples:\n"
        "  volseg check data/synthetic/organs/manifest.json\n"
        "  volseg check /data/Task09_Spleen --splits splits.json --folds 5",
    )
    p.add_argument("manifest", type=Path, help="manifest file or dataset folder")
    p.add_argument("--splits", type=Path, help="write patient-level k-fold splits to this JSON")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--no-labels", action="store_true", help="skip reading label maps (faster on big sets)"
    )
    p.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from volseg.data import load_manifest, make_splits, save_splits, validate_manifest

    manifest = load_manifest(args.manifest)
    problems = validate_manifest(manifest, check_labels=not args.no_labels)
    print(describe_manifest(manifest))
    if problems:
        for problem in problems:
            print(f"  problem: {problem}")
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        them = "them" if len(problems) > 1 else "it"
        print(f"error: {count} in {manifest.source}; fix {them} and re-run", file=sys.stderr)
        return 2
    print("no problems found")
    if args.splits:
        save_splits(make_splits(manifest, folds=args.folds, seed=args.seed), args.splits)
        print(f"wrote {args.folds}-fold splits to {args.splits}")
    return 0


def describe_manifest(manifest) -> str:
    """A few lines saying what a manifest holds."""
    lines = [
        f"{manifest.name} ({manifest.format}, {manifest.task}): {len(manifest.cases)} labelled "
        f"cases, {len(manifest.test_cases)} test cases",
        f"  modalities: {', '.join(manifest.modalities)}",
    ]
    if manifest.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(manifest.labels.items()))
        lines.append(f"  labels: {labels}")
    if manifest.classes:
        counts = {c: sum(case.target == c for case in manifest.cases) for c in manifest.classes}
        lines.append("  classes: " + ", ".join(f"{c} ({n})" for c, n in counts.items()))
    return "\n".join(lines)


def register_models(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "models",
        "List the encoders and heads volseg builds, with parameter counts and head GFLOP.",
        "Counts come from the real architectures (built on PyTorch's meta device, so even\n"
        "ViT-g costs no memory). Head settings come from CONFIG (default: configs/base.yaml's\n"
        "defaults) plus key=value overrides.\n\n"
        "examples:\n"
        "  volseg models\n"
        "  volseg models configs/synthetic_organs.yaml model.head.channels=128 --json",
    )
    p.add_argument("config", type=Path, nargs="?", help="YAML config for the head settings")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    import json

    from volseg.config import Config, load_config
    from volseg.models import ENCODERS, head_parameter_table

    config = load_config(Config, args.config, args.overrides)
    rows = head_parameter_table(model=config.model)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("encoders: " + ", ".join(ENCODERS.names()))
    head, enc = config.model.head, config.model.encoder
    print(
        f"heads with channels={head.channels}, depth={head.depth}, input_size={enc.input_size}, "
        f"layers={enc.layers} ({enc.fusion}); segmentation: 4 classes on 1 channel, GFLOP of one "
        "forward on a 512 x 512 x 16 slab; mil: 2 grades, 4 modalities"
    )
    print(
        f"{'encoder':<10}{'E':>6}{'encoder params':>16}  {'head':<8}{'head params':>13}"
        f"{'GFLOP/slab':>12}"
    )
    for row in rows:
        flops = "-" if row["gflops_per_slab"] is None else f"{row['gflops_per_slab']:,.1f}"
        print(
            f"{row['encoder']:<10}{row['embed_dim']:>6}{row['encoder_params']:>16,}  "
            f"{row['head']:<8}{row['head_params']:>13,}{flops:>12}"
        )
    return 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "bench",
        "Run a whole benchmark: train or reuse each model, predict, evaluate, time, report.",
        "CONFIG is a bench YAML: name, output_dir, test (manifest of the held-out cases), and\n"
        "models, each with a name and a training config plus overrides (or an existing run).\n"
        "MONAI baselines are models too (model.encoder.name=none model.head.name=monai_unet).\n"
        "Writes OUTPUT_DIR/NAME/{runs,predictions,evaluation}/, bench.csv (quality, seconds per\n"
        "volume, peak memory) and report/report.html. See configs/bench_synthetic_organs.yaml.\n\n"
        "examples:\n"
        "  volseg bench configs/bench_synthetic_organs.yaml\n"
        "  volseg bench configs/bench_synthetic_organs.yaml output_dir=/tmp/bench",
    )
    p.add_argument("config", type=Path, help="bench YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="bench config overrides")
    p.set_defaults(run=run_bench_cli)


def run_bench_cli(args: argparse.Namespace) -> int:
    from volseg.bench import load_bench_config, run_bench

    report = run_bench(load_bench_config(args.config, args.overrides))
    print(f"report: {report}")
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "demo",
        "Run the main job end to end on built-in synthetic data (what `make demo` runs).",
        "Synthesises a CT organ set and a glioma MRI set (training pool + held-out test cases),\n"
        "trains a frozen ViT-S/14 (random weights, features cached) with the seg3d and mil heads,\n"
        "predicts the test cases, evaluates them and writes OUT/report/report.html. A few\n"
        "minutes on 2 CPU cores; nothing is downloaded.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training overrides")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=run_demo_cli)


def run_demo_cli(args: argparse.Namespace) -> int:
    from volseg.demo import run_demo

    run_demo(args.out, seed=args.seed, overrides=args.overrides)
    return 0


REGISTER = [
    register_synth,
    register_check,
    register_train,
    register_models,
    register_predict,
    register_evaluate,
    register_report,
    register_bench,
    register_demo,
]
