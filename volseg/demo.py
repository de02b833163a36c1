"""``volseg demo``: the main job on built-in synthetic data, from the functions a user calls."""

from __future__ import annotations

from pathlib import Path

from volseg.data import check_manifest, load_manifest, make_splits, save_splits
from volseg.synth import SIZES, synthesize_glioma, synthesize_organs

DEMO_CASES = 10


def run_demo(out_dir: str | Path = "demo_output", *, seed: int = 0) -> dict[str, Path]:
    """Synthesise the demo datasets, validate them and write their splits.

    Training, prediction, evaluation and the report are added to this function as their
    stages land; each step calls the same function as the matching CLI command.

    Args:
        out_dir: folder for everything the demo writes.
        seed: seed for the phantoms and the splits.

    Returns:
        Dataset name -> its manifest path.
    """
    out_dir = Path(out_dir)
    manifests = {
        "organs": synthesize_organs(
            out_dir / "organs", cases=DEMO_CASES, shape=SIZES["small"], seed=seed
        ),
        "glioma": synthesize_glioma(
            out_dir / "glioma", cases=DEMO_CASES, shape=SIZES["small"], seed=seed
        ),
    }
    for name, path in manifests.items():
        manifest = load_manifest(path)
        check_manifest(manifest)
        splits_path = save_splits(
            make_splits(manifest, folds=5, seed=seed), path.parent / "splits.json"
        )
        print(f"{name}: {len(manifest.cases)} cases valid, 5-fold splits in {splits_path}")
    print(
        f"demo data ready in {out_dir}/. Training, prediction and the report are not "
        "implemented yet: `volseg train` exits with status 3 until they land."
    )
    return manifests
