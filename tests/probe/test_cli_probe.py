"""``volseg probe`` end to end on tiny synthetic sets with the test-size ViT, and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from volseg.cli.main import main

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = ["model.encoder.name=vit_test_patch14_dinov2", "seed=1"]


@pytest.fixture(scope="module")
def glioma(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    args = ["synth", "--dataset", "glioma", "--cases", "12", "--size", "tiny", "--out", str(out)]
    assert main(args) == 0
    return out / "glioma" / "manifest.json"


def probe(manifest: Path, out: Path, *args: str, config: str = "synthetic_glioma.yaml") -> int:
    return main(
        ["probe", str(CONFIGS / config), "--out", str(out), "--no-progress", *args,
         f"data.manifest={manifest}", *TINY]
    )  # fmt: skip


def rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "probe.csv").open()))


def test_each_protocol_writes_its_rows(glioma, tmp_path):
    cache = f"train.cache_dir={tmp_path / 'cache'}"
    assert probe(glioma, tmp_path / "knn", "--protocol", "knn", cache) == 0
    entries = sorted((tmp_path / "cache").iterdir())
    assert len(entries) == 12  # one per case
    knn = rows(tmp_path / "knn")
    doc = json.loads((tmp_path / "knn" / "probe.json").read_text())
    n_fit = len(doc["splits"]["train"]) + len(doc["splits"]["val"])
    assert [(r["setting"], r["metric"]) for r in knn] == [
        (f"k={n_fit}", "balanced_accuracy"), (f"k={n_fit}", "AUC")
    ]  # 10/20/100/200 all capped at the training rows  # fmt: skip
    assert {r["weights"] for r in knn} == {"random"} and knn[0]["n_train"] == str(n_fit)
    assert knn[0]["encoder"] == "vit_test_patch14_dinov2" and knn[0]["ci95_low"] != ""
    assert sorted(sum(doc["splits"].values(), [])) == [f"glioma_{i:03d}" for i in range(12)]

    assert probe(glioma, tmp_path / "linear", "--protocol", "linear", cache) == 0
    linear = rows(tmp_path / "linear")
    assert [r["metric"] for r in linear] == ["balanced_accuracy", "AUC"]
    assert linear[0]["view"].startswith("cls_last") and float(linear[0]["lr"]) > 0
    grid = json.loads((tmp_path / "linear" / "probe.json").read_text())["grid"]
    assert len(grid) == 4 * 4  # learning rates x (last 1 | last 3 blocks) x (+- patch token)
    assert [p.stat().st_mtime_ns for p in entries] == [
        p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").iterdir())
    ]  # the second protocol read the cached features back

    assert probe(glioma, tmp_path / "few", "--protocol", "fewshot", "--shots", "1,2",
                 "--seeds", "3", cache) == 0  # fmt: skip
    few = rows(tmp_path / "few")
    assert [(r["shots"], r["metric"]) for r in few] == [
        ("1", "balanced_accuracy"), ("1", "AUC"), ("2", "balanced_accuracy"), ("2", "AUC")
    ]  # fmt: skip
    assert all(r["seeds"] == "3" and r["std"] != "" for r in few)
    assert [r["n_train"] for r in few] == ["2", "2", "4", "4"]

    assert main(["report", str(tmp_path / "knn"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Probes" in md and "| knn | k=" in md and "Random encoder weights" in md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "svm"], "--protocol 'svm' is not one of knn, linear, fewshot"),
        (["--protocol", "fewshot", "--shots", "1,x"], "--shots '1,x'"),
        (["--protocol", "fewshot", "--shots", "9"], "--shots 9 needs 9 training rows"),
        (["--protocol", "fewshot", "--seeds", "0"], "--seeds 0 must be at least 1"),
        (["--protocol", "knn", "data.folds=2"], "needs at least 3 folds"),
    ],
)
def test_bad_values_are_one_line_errors(glioma, tmp_path, capsys, args, message):
    assert probe(glioma, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_manifest_key_is_one_line(tmp_path, capsys):
    args = ["probe", str(CONFIGS / "synthetic_glioma.yaml"), "--protocol", "knn", "--out",
            str(tmp_path), "data.manifest=", *TINY]  # fmt: skip
    assert main(args) == 2
    assert "config key 'data.manifest' is empty" in capsys.readouterr().err


def test_segmentation_rows_are_patches_with_majority_labels(tmp_path):
    synth = ["synth", "--dataset", "organs", "--cases", "6", "--size", "tiny", "--out"]
    assert main([*synth, str(tmp_path)]) == 0
    manifest = tmp_path / "organs" / "manifest.json"
    out = tmp_path / "probe"
    args = ["--protocol", "linear", "data.folds=3"]  # 224 px slices: 16 x 16 patches
    assert probe(manifest, out, *args, config="synthetic_organs.yaml") == 0
    table = rows(out)
    assert [r["metric"] for r in table] == ["balanced_accuracy", "patch_dice"]
    assert table[0]["task"] == "segmentation" and table[0]["view"].startswith("patch_last")
    doc = json.loads((out / "probe.json").read_text())
    assert "majority label" in doc["pooling"] and len(doc["classes"]) > 2
    assert int(table[0]["n_test"]) > 2 * len(doc["splits"]["test"])  # many patches per case
    assert table[1]["value"] != ""  # a patch Dice: organ patches among the test rows
