"""``volseg check``: validate a dataset manifest; optionally write k-fold splits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg check`` to ``sub``."""
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
