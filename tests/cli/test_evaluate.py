from __future__ import annotations

import csv
import json
import shutil

import numpy as np

from volseg.cli.main import main
from volseg.io import read_image, write_like


def test_evaluate_segmentation_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "synthetic"
    main(["synth", "--out", str(data), "--dataset", "organs", "--cases", "2", "--size", "tiny"])
    pred = tmp_path / "pred"
    shutil.copytree(data / "organs" / "labelsTr", pred)
    shifted = read_image(pred / "organs_001.nii.gz")
    write_like(np.roll(shifted.array, 2, axis=0), shifted, pred / "organs_001.nii.gz", label=True)
    out = tmp_path / "eval"
    manifest = data / "organs" / "manifest.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--ref",
                str(manifest),
                "--out",
                str(out),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    per_case = {c["case"]: c for c in summary["metric_per_case"]}
    assert per_case["organs_000"]["metrics"]["1"]["Dice"] == 1.0
    assert per_case["organs_001"]["metrics"]["1"]["Dice"] < 1.0
    with open(out / "per_case.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 4
    assert "foreground mean Dice" in capsys.readouterr().out


def test_evaluate_bad_options_are_one_line_errors(tmp_path, capsys):
    args = ["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--out", str(tmp_path)]
    assert main([*args, "--labels", "1=liver,x"]) == 2
    assert main([*args, "--tolerance", "1=a"]) == 2
    assert main([*args, "--resamples", "10"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error:") for e in errors)


def test_evaluate_grading_takes_the_folder_predict_wrote(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    scores = {"p1": 0.1, "p2": 0.4, "p3": 0.35, "p4": 0.8}
    with (pred / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "prob_low", "prob_high", "predicted"])
        writer.writerows([c, 1 - s, s, "high" if s >= 0.5 else "low"] for c, s in scores.items())
    truth = tmp_path / "truth.csv"
    truth.write_text("case_id,label\np1,low\np2,low\np3,high\np4,high\n")
    args = ["evaluate", "--pred", str(pred), "--ref", str(truth), "--out", str(tmp_path / "e")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["metrics"]["AUC"] == 0.75
    assert "AUC: 0.750" in capsys.readouterr().out
