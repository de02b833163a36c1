"""torchrun with 2 CPU processes on Gloo: DDP training, sharded samples, rank-0-only files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from volseg.data import load_splits

SCRIPT = Path(__file__).with_name("ddp_train.py")


def test_two_processes_train_on_disjoint_shards(organs, tmp_path):
    out, ids = tmp_path / "runs", tmp_path / "ids"
    ids.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(SCRIPT), str(organs), str(out), str(ids),
    ]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    ranks = [json.loads((ids / f"rank{r}.json").read_text()) for r in range(2)]
    run_dir = Path(ranks[0]["run"])
    assert ranks[1]["run"] == str(run_dir) and [p.name for p in out.iterdir()] == ["tiny"]
    train_ids = set(load_splits(run_dir / "splits.json")[0]["train"])
    per_epoch = len(train_ids) // 2  # 4 training cases: 2 per rank and epoch
    for epoch in range(2):
        shares = [set(r["ids"][epoch * per_epoch : (epoch + 1) * per_epoch]) for r in ranks]
        assert not shares[0] & shares[1] and shares[0] | shares[1] == train_ids
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer
    assert rows[-1]["val_cases"] == 2.0  # validation gathered from both ranks
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "feature cache" in done.stderr and done.stderr.count("epoch 2/2") == 1
