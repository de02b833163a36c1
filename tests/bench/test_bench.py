"""volseg bench end to end on a tiny set: a volseg model and a MONAI baseline, one report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from volseg.bench import (
    encoder_off_model,
    encoder_off_pairs,
    load_bench_config,
    run_bench,
)
from volseg.cli.main import main
from volseg.errors import VolsegError
from volseg.metrics.contribution import add_encoder_contribution
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
        f"  - name: no_encoder\n    config: ''\n    overrides: [{overrides},"
        " model.encoder.name=none]\n"
    )
    report = run_bench(load_bench_config(bench), progress=False)
    out = tmp_path / "out" / "tiny"
    assert report == out / "report" / "report.html" and report.is_file()
    with open(out / "bench.csv") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"vit_frozen", "unet", "no_encoder"}
    for row in rows.values():
        assert 0.0 <= float(row["score"]) <= 1.0
        assert float(row["seconds_per_volume"]) > 0 and float(row["peak_memory_mb"]) > 0
        assert (out / "evaluation" / row["model"] / "summary.json").is_file()
        # the score's CI is the evaluation's bootstrap CI of the foreground-mean Dice
        summary = json.loads((out / "evaluation" / row["model"] / "summary.json").read_text())
        low, high = summary["ci95_foreground"]["Dice"]
        assert json.loads(row["score_ci95"]) == pytest.approx([low, high], abs=5e-4)
    # the encoder's contribution: found from the configs, paired per case against no_encoder
    assert rows["no_encoder"]["vs_encoder_off"] == ""
    dice = {m: _case_dice(out / "evaluation" / m / "summary.json") for m in rows}
    for model in ("vit_frozen", "unet"):
        expected = sum(dice[model][c] - dice["no_encoder"][c] for c in dice[model]) / 2
        assert float(rows[model]["vs_encoder_off"]) == pytest.approx(expected, abs=1e-4)
        low, high = json.loads(rows[model]["vs_encoder_off_ci95"])
        assert low <= expected + 1e-4 and expected - 1e-4 <= high
    html = report.read_text()
    assert "vit_frozen" in html and "unet" in html and "Wilcoxon" in html
    assert "encoder&#x27;s contribution" in html or "encoder's contribution" in html


def _case_dice(summary_path):
    summary = json.loads(summary_path.read_text())
    return {
        case["case"]: sum(m["Dice"] for m in case["metrics"].values()) / len(case["metrics"])
        for case in summary["metric_per_case"]
    }


def test_encoder_contribution_is_the_paired_mean_difference():
    def summary(values):
        return {
            "metric_per_case": [
                {"case": c, "metrics": {"1": {"Dice": a}, "2": {"Dice": b}}}
                for c, (a, b) in values.items()
            ]
        }

    summaries = {
        "off": summary({"x": (0.5, 0.5), "y": (0.2, 0.4), "z": (0.9, 0.9)}),
        "vit": summary({"x": (0.7, 0.5), "y": (0.4, 0.6), "w": (1.0, 1.0), "z": (0.9, 0.9)}),
    }
    rows = [
        {"model": "off", "task": "segmentation", "vs_encoder_off": "", "vs_encoder_off_ci95": ""},
        {"model": "vit", "task": "segmentation", "vs_encoder_off": "", "vs_encoder_off_ci95": ""},
    ]
    add_encoder_contribution(rows, summaries, {"off": "off", "vit": "off"})
    assert rows[0]["vs_encoder_off"] == ""
    assert rows[1]["vs_encoder_off"] == pytest.approx((0.1 + 0.2 + 0.0) / 3, abs=1e-4)  # w unpaired
    low, high = json.loads(rows[1]["vs_encoder_off_ci95"])
    assert 0.0 <= low <= high <= 0.2


def test_grading_contribution_is_the_auc_difference_on_the_same_cases():
    classes = ["grade2", "grade3"]

    def summary(p_high):  # case -> (true class, probability of grade3)
        rows = [
            {"case_id": c, "true": t, "prob_grade2": str(1 - p), "prob_grade3": str(p)}
            for c, (t, p) in p_high.items()
        ]
        return {"classes": classes, "per_case": rows}

    truth = {"a": "grade2", "b": "grade2", "c": "grade3", "d": "grade3"}
    size_p = zip("abcd", (0.2, 0.6, 0.4, 0.8), strict=True)  # AUC 0.75
    vit_p = zip("abcd", (0.1, 0.2, 0.7, 0.9), strict=True)  # AUC 1.0
    size = summary({c: (truth[c], p) for c, p in size_p})
    vit = summary({c: (truth[c], p) for c, p in vit_p})
    extra = {"case_id": "e", "true": "grade3", "prob_grade2": "1", "prob_grade3": "0"}
    vit["per_case"].append(extra)
    rows = [
        {"model": m, "task": "classification", "vs_encoder_off": "", "vs_encoder_off_ci95": ""}
        for m in ("size", "vit")
    ]
    add_encoder_contribution(rows, {"size": size, "vit": vit}, {"size": "", "vit": "size"})
    assert rows[0]["vs_encoder_off"] == ""  # the ablation itself
    assert rows[1]["vs_encoder_off"] == pytest.approx(0.25)  # case e has no size row: left out
    low, high = json.loads(rows[1]["vs_encoder_off_ci95"])
    assert low <= 0.25 <= high <= 1.0


def test_bench_finds_or_checks_the_encoder_off_row(tmp_path):
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        "name: x\ntest: t.json\nmodels:\n  - name: vit\n    config: ''\n"
        "  - name: off\n    config: ''\n    overrides: [model.encoder.name=none]\n"
    )
    assert encoder_off_model(load_bench_config(bench)) == "off"
    with pytest.raises(VolsegError, match="encoder_off.*'nope'"):
        load_bench_config(bench, ["encoder_off=nope"])
    bench.write_text(bench.read_text() + "    encoder_off: vit2\n")
    with pytest.raises(VolsegError, match="models\\[1\\].encoder_off.*'vit2'"):
        load_bench_config(bench)


def test_encoder_off_rows_are_not_paired_with_each_other(tmp_path):
    # A few-label bench holds one encoder-off row per pool size: each ViT row pairs with the
    # bench's encoder-off row unless it names its own, and no encoder-off row is compared with
    # another encoder-off row unless its config says so.
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        "name: x\ntest: t.json\nmodels:\n"
        "  - name: vit1\n    config: ''\n"
        "  - name: off1\n    config: ''\n    overrides: [model.encoder.name=none]\n"
        "  - name: vit5\n    config: ''\n    encoder_off: off5\n"
        "  - name: off5\n    config: ''\n    overrides: [model.encoder.name=none]\n"
    )
    assert encoder_off_pairs(load_bench_config(bench)) == {
        "vit1": "off1",
        "off1": "",
        "vit5": "off5",
        "off5": "",
    }


def test_the_size_head_is_the_grading_benchs_encoder_off_row(tmp_path):
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        "name: x\ntest: t.json\nmodels:\n"
        "  - name: vit\n    config: ''\n    overrides: [model.task=classification, "
        "model.head.name=mil]\n"
        "  - name: size\n    config: ''\n    overrides: [model.task=classification, "
        "model.encoder.name=none, model.head.name=size, 'data.spacing=[1.0,1.0,2.0]']\n"
    )
    assert encoder_off_pairs(load_bench_config(bench)) == {"vit": "size", "size": ""}


def test_bench_config_errors_name_the_key(tmp_path, capsys):
    bench = tmp_path / "bench.yaml"
    bench.write_text("name: x\ntest: t.json\nmodels:\n  - name: a\n    confg: c.yaml\n")
    with pytest.raises(VolsegError, match="models\\[0\\].confg"):
        load_bench_config(bench)
    bench.write_text("name: x\nmodels:\n  - name: a\n    config: c.yaml\n")
    assert main(["bench", str(bench)]) == 2
    assert "'test'" in capsys.readouterr().err
    bench.write_text("name: x\nprobes:\n  - name: p\n    protocol: svm\n")
    with pytest.raises(VolsegError, match="probes\\[0\\].protocol.*knn, linear, fewshot"):
        load_bench_config(bench)
    bench.write_text("name: x\nmodels: []\n")
    with pytest.raises(VolsegError, match="'models' and 'probes' list nothing"):
        load_bench_config(bench)


def test_bench_probes_run_each_protocol_share_features_and_report(tmp_path):
    from volseg.synth import synthesize_glioma

    manifest = synthesize_glioma(tmp_path / "data", cases=12, shape=(28, 28, 8), seed=0)
    overrides = (
        f"[data.manifest={manifest}, model.encoder.name=vit_test_patch14_dinov2, seed=1, "
        "model.encoder.input_size=native]"
    )
    config = Path(__file__).parents[2] / "configs" / "synthetic_glioma.yaml"
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        f"name: probes\noutput_dir: {tmp_path / 'out'}\nprobes:\n"
        f"  - name: vit_knn\n    config: {config}\n"
        f"    overrides: {overrides}\n"
        f"  - name: vit_few\n    config: {config}\n"
        f"    overrides: {overrides}\n    protocol: fewshot\n    shots: [1, 2]\n    seeds: 2\n"
    )
    report = run_bench(load_bench_config(bench), progress=False)
    out = tmp_path / "out" / "probes"
    with open(out / "probes.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["probe"] for r in rows} == {"vit_knn", "vit_few"}
    assert {r["protocol"] for r in rows if r["probe"] == "vit_few"} == {"fewshot"}
    assert sorted({r["shots"] for r in rows if r["probe"] == "vit_few"}) == ["1", "2"]
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    assert len(list((out / "probes" / "cache").iterdir())) == 12  # one entry per case, shared
    assert not (out / "bench.csv").exists()  # no models: no leaderboard
    html = report.read_text()
    assert "vit_knn" in html and "vit_few" in html and "fewshot" in html


def test_only_keeps_the_named_models_and_says_which_names_exist(tmp_path):
    from volseg.bench import select

    bench = tmp_path / "bench.yaml"
    bench.write_text(
        "name: x\ntest: t.json\nmodels:\n  - name: vit\n  - name: off\n"
        "    overrides: [model.encoder.name=none]\n  - name: unet\n"
        "probes:\n  - name: knn\n"
    )
    cfg = load_bench_config(bench)
    picked = select(cfg, ["unet", "vit"], bench)
    assert [m.name for m in picked.models] == ["vit", "unet"] and picked.probes == []
    assert encoder_off_pairs(picked) == {"vit": "", "unet": ""}  # the off row was not picked
    assert [p.name for p in select(cfg, ["knn"], bench).probes] == ["knn"]
    with pytest.raises(VolsegError, match="--only names vti, .*choose from vit, off, unet, knn"):
        select(cfg, ["vti"], bench)
    # a pair whose encoder-off row did not run is left empty, not an error
    rows = [{"model": "vit", "task": "segmentation", "vs_encoder_off": ""}]
    add_encoder_contribution(rows, {"vit": {}}, {"vit": "off"})
    assert rows[0]["vs_encoder_off"] == ""


def test_a_partial_rerun_keeps_the_other_models_rows(tmp_path):
    """--only updates bench.csv: rows of models not rerun stay, in the config's order; rows of
    models no longer in the config go."""
    from volseg.bench import BENCH_COLUMNS, merge_rows

    path = tmp_path / "bench.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BENCH_COLUMNS)
        writer.writeheader()
        for name, score in (("a", "0.5"), ("b", "0.6"), ("gone", "0.1")):
            writer.writerow({"model": name, "score": score})
    fresh = [{"model": "b", "score": 0.9}, {"model": "c", "score": 0.7}]
    merged = merge_rows(path, fresh, ["a", "b", "c"])
    assert [(r["model"], r["score"]) for r in merged] == [("a", "0.5"), ("b", 0.9), ("c", 0.7)]
    assert merge_rows(path, fresh, []) == fresh  # a whole run replaces the table
    assert merge_rows(tmp_path / "none.csv", fresh, ["a", "b", "c"]) == fresh


def test_the_leaderboard_names_auc_for_a_grading_benchs_contribution(tmp_path):
    from volseg.report.collect import Bench
    from volseg.report.compare import leaderboard_sections

    rows = [
        {"model": "vit", "task": "classification", "score": "0.8", "score_name": "AUC",
         "vs_encoder_off": "-0.07", "vs_encoder_off_ci95": "[-0.2, 0.1]"},
        {"model": "size", "task": "classification", "score": "0.9", "score_name": "AUC",
         "vs_encoder_off": ""},
    ]  # fmt: skip
    table = leaderboard_sections([Bench(tmp_path, "g", rows, ["vit", "size"])])[0].blocks[0]
    assert "encoder's contribution: AUC - encoder off [95% CI]" in table.header
    assert "-0.070 [-0.2, 0.1]" in table.rows[0] and "Dice" not in table.caption
    assert "size head" in table.caption
