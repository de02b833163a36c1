"""Convert a public dataset from its download layout to a volseg manifest.

Usage::

    python tools/convert_dataset.py DATASET SOURCE_DIR -o OUT.json [options]

Each dataset has a template in ``data_manifests/`` that holds its label map or classes and its
modality names (the one source of truth); the converter finds the cases in SOURCE_DIR's native
layout and writes the full manifest, with paths relative to OUT.json. Every converter is a
function (``convert_msd``, ``convert_btcv``, ...) returning a :class:`Manifest` whose paths are
absolute; :func:`write_manifest` saves it. The converters live in ``tools/convert/`` by dataset
family (``segmentation``: MSD, BTCV, AMOS22; ``brats``; ``ucsf``), with what they share in
``common``; this script is the command line over them.

Errors a user can cause (folder missing, no cases, a file missing, a grade not found) are
:class:`VolsegError`; the script prints them as one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout: use the in-repo volseg
    sys.path.insert(0, str(REPO_ROOT))

from tools.convert.brats import convert_brats2021, convert_brats_grading  # noqa: E402
from tools.convert.common import read_template  # noqa: E402
from tools.convert.segmentation import (  # noqa: E402
    AMOS_MODALITY,
    MSD_TEMPLATES,
    convert_amos22,
    convert_btcv,
    convert_msd,
)
from tools.convert.ucsf import convert_ucsf_pdgm  # noqa: E402
from volseg.data.manifest import Manifest, save_manifest  # noqa: E402
from volseg.errors import VolsegError  # noqa: E402


def write_manifest(manifest: Manifest, out: str | Path, template: dict, note: str) -> Path:
    """Save ``manifest`` (paths relative to ``out``) with the template's reference and licence.

    Args:
        manifest: the converted manifest (absolute paths).
        out: the JSON file to write.
        template: the dataset's template; its ``reference`` and ``license`` are copied.
        note: the ``description`` to write (where the manifest came from).

    Returns:
        The path written.
    """
    extras = {"description": note}
    extras.update({k: template[k] for k in ("reference", "license") if k in template})
    manifest.info = {**manifest.info, **extras}
    return save_manifest(manifest, out)


DATASETS = {
    "msd": "any Medical Segmentation Decathlon task folder (reads its dataset.json)",
    "btcv": "BTCV Abdomen / Synapse multi-organ CT (RawData.zip)",
    "amos22": "AMOS22 abdominal CT/MRI (amos22.zip; see --modality)",
    "brats2021": "BraTS 2021 Task 1 segmentation",
    "brats_grading": "BraTS 2019 or 2020 training data as LGG-vs-HGG classification",
    "ucsf_pdgm": "UCSF-PDGM WHO CNS grade 2/3/4 classification (see --metadata)",
}


def template_for(dataset: str, manifest: Manifest) -> dict:
    """The template a converted manifest came from; ``{}`` for an MSD task without one."""
    if dataset == "msd":
        match = re.match(r"msd_task(\d+)_", manifest.name)
        filename = MSD_TEMPLATES.get(int(match.group(1))) if match else None
        return read_template(filename) if filename else {}
    return read_template(f"{dataset}.json")


def convert(dataset: str, source: Path, args: argparse.Namespace) -> Manifest:
    """Run the converter for ``dataset`` with the command-line options in ``args``."""
    skip = args.skip_incomplete
    if dataset == "msd":
        return convert_msd(source, skip_incomplete=skip)
    if dataset == "btcv":
        return convert_btcv(source, skip_incomplete=skip)
    if dataset == "amos22":
        return convert_amos22(source, modality=args.modality, skip_incomplete=skip)
    if dataset == "brats2021":
        return convert_brats2021(source, skip_incomplete=skip)
    if dataset == "brats_grading":
        return convert_brats_grading(source, skip_incomplete=skip)
    return convert_ucsf_pdgm(source, metadata=args.metadata, skip_incomplete=skip)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/convert_dataset.py",
        description=(
            "Write a volseg manifest for a public dataset from its native download layout.\n"
            "Label maps, classes and modality names come from the templates in\n"
            "data_manifests/; paths in the output are relative to OUT.json."
        ),
        epilog="datasets:\n"
        + "\n".join(f"  {k:<14} {v}" for k, v in DATASETS.items())
        + "\n\nexample:\n  python tools/convert_dataset.py msd /data/Task09_Spleen "
        "-o manifests/spleen.json\nSee data_manifests/README.md for each dataset's layout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        choices=sorted(DATASETS),
        metavar="DATASET",
        help="one of: " + ", ".join(DATASETS),
    )
    parser.add_argument(
        "source",
        type=Path,
        metavar="SOURCE_DIR",
        help="the extracted download (see data_manifests/README.md)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT.json",
        help="manifest file to write",
    )
    parser.add_argument(
        "--modality",
        choices=sorted(AMOS_MODALITY),
        default="ct",
        help="amos22 only: CT cases (ids <= 500), MRI cases (ids > 500) or all; default: ct",
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        metavar="CSV",
        help="ucsf_pdgm only: the UCSF-PDGM metadata CSV (default: the newest "
        "UCSF-PDGM-metadata*.csv in SOURCE_DIR or its parent)",
    )
    parser.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="leave out cases with a missing file or grade (with a warning) "
        "instead of stopping with an error",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for errors a user can cause)."""
    args = build_parser().parse_args(argv)
    try:
        manifest = convert(args.dataset, args.source, args)
        template = template_for(args.dataset, manifest)
        note = (
            f"{manifest.name}, converted from {Path(args.source).resolve()} by "
            f"tools/convert_dataset.py {args.dataset}"
        )
        out = write_manifest(manifest, args.output, template, note)
    except VolsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = f"{len(manifest.cases)} labelled cases"
    if manifest.test_cases:
        counts += f", {len(manifest.test_cases)} test cases"
    print(f"wrote {out} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
