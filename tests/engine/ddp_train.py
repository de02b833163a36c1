"""Run by tests/engine/test_distributed.py under ``torch.distributed.run`` (2 CPU processes).

Usage: ddp_train.py MANIFEST OUT_DIR IDS_DIR: trains the tiny config on Gloo and writes the case
ids each rank trained on to ``IDS_DIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.engine

from tests.engine.conftest import tiny_config  # noqa: E402
from volseg.engine import datasets  # noqa: E402
from volseg.engine.train import run_training  # noqa: E402


def main() -> None:
    manifest, out, ids_dir = (Path(a) for a in sys.argv[1:4])
    seen: list[str] = []
    getitem = datasets.SampleDataset.__getitem__

    def recording(self, key):
        sample = getitem(self, key)
        seen.append(sample["id"])
        return sample

    datasets.SampleDataset.__getitem__ = recording
    config = tiny_config(manifest, out, "train.epochs=2", "train.batch_size=1")
    run_dir = run_training(config, progress=False)
    rank = os.environ["RANK"]
    (ids_dir / f"rank{rank}.json").write_text(json.dumps({"ids": seen, "run": str(run_dir)}))


if __name__ == "__main__":
    main()
