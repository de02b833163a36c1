"""volseg bench end to end on a tiny set: a volseg model and a MONAI baseline, one report."""

from __future__ import annotations

import csv

import pytest

from volseg.bench import load_bench_config, run_bench
from volseg.cli.main import main
from volseg.errors import VolsegError
from volseg.synth import synthesize_organs

TINY_TRAINING = [
    "model.encoder.name=vit_test_patch14_dinov2",
    "model.head.channels=8",
    "data.slab=8",
    "data.folds=2",
    "train.epochs=1",
    "train.val_every=1",
    "train.num_workers=0",
]


def test_bench_trains_predicts_scores_and_reports(tmp_path):
    train = synthesize_organs(tmp_path / "train", cases=4, shape=(32, 32, 16), seed=0)
    test = synthesize_organs(tmp_path / "test", cases=2, shape=(32, 32, 16), seed=9)
    bench = tmp_path / "bench.yaml"
    overrides = ", ".join([*TINY_TRAINING, f"data.manifest={train}"])
    bench.write_text(
        f"name: tiny\noutput_dir: {tmp_path / 'out'}\ntest: {test}\nmodels:\n"
        f"  - name: vit_frozen\n    config: ''\n    overrides: [{overrides}]\n"
        f"  - name: unet\n    config: ''\n    overrides: [{overrides}, model.encoder.name=none,"
        " model.head.name=monai_unet, model.head.channels=4]\n"
    )
    report = run_bench(load_bench_config(bench), progress=False)
    out = tmp_path / "out" / "tiny"
    assert report == out / "report" / "report.html" and report.is_file()
    with open(out / "bench.csv") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"vit_frozen", "unet"}
    for row in rows.values():
        assert 0.0 <= float(row["score"]) <= 1.0
        assert float(row["seconds_per_volume"]) > 0 and float(row["peak_memory_mb"]) > 0
        assert (out / "evaluation" / row["model"] / "summary.json").is_file()
    html = report.read_text()
    assert "vit_frozen" in html and "unet" in html and "Wilcoxon" in html


def test_bench_config_errors_name_the_key(tmp_path, capsys):
    bench = tmp_path / "bench.yaml"
    bench.write_text("name: x\ntest: t.json\nmodels:\n  - name: a\n    confg: c.yaml\n")
    with pytest.raises(VolsegError, match="models\\[0\\].confg"):
        load_bench_config(bench)
    bench.write_text("name: x\nmodels:\n  - name: a\n    config: c.yaml\n")
    assert main(["bench", str(bench)]) == 2
    assert "'test'" in capsys.readouterr().err
