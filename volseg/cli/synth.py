"""``volseg synth``: write the synthetic CT organ, glioma MRI and abdomen datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg synth`` to ``sub``."""
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
        choices=["organs", "glioma", "abdomen", "pelvis", "glioma-heldout", "both"],
        default="both",
        help="which dataset (both = organs + glioma; abdomen and pelvis are held-out CT "
        "benchmark sets, glioma-heldout the held-out grading set)",
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.synth import SIZES, synthesize_glioma, synthesize_organs
    from volseg.synth.output import check_folder, prepare_folder
    from volseg.synth.shapes import check_request

    shape = tuple(args.shape) if args.shape else SIZES[args.size]
    check_request(args.cases, shape)
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
    if args.dataset == "pelvis":
        from volseg.synth import synthesize_pelvis

        written.append(
            synthesize_pelvis(args.out / "pelvis", cases=args.cases, shape=shape, seed=args.seed)
        )
    if args.dataset == "glioma-heldout":
        from volseg.synth import synthesize_glioma_heldout

        written.append(
            synthesize_glioma_heldout(
                args.out / "glioma-heldout",
                cases=args.cases,
                shape=shape,
                seed=args.seed,
                grades=args.grades,
            )
        )
    for manifest in written:
        print(f"wrote {manifest}")
    return 0
