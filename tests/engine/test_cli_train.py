"""``volseg train`` options, through the subcommand :func:`volseg.cli.train.add_parser` adds."""

from __future__ import annotations

import argparse

import pytest
import yaml

from tests.engine.conftest import TINY_MODEL
from volseg.cli import train
from volseg.errors import VolsegError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="volseg")
    train.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.fixture
def config_file(organs, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "output_dir": str(tmp_path / "runs"),
                "data": {"manifest": str(organs), "folds": 3, "slab": 8, "mirror": False},
            }
        )
    )
    return path


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    text = capsys.readouterr().out
    for part in ("--dry-run", "--resume RUN_DIR", "--init-from CKPT", "torchrun", "examples:"):
        assert part in text


def test_dry_run_prints_the_plan_and_writes_nothing(config_file, tmp_path, capsys):
    args = parse(str(config_file), *TINY_MODEL, "train.epochs=3", "--dry-run")
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "plan for run 'cli'" in out and "x 3 epochs" in out
    # 32 x 32 phantoms resized to 224 px: 16 x 16 tokens of 48 fp16 channels, 12 slices each
    assert "16 x 16 tokens per slice (input size 224 px" in out
    cases = int(out.split("feature cache about ")[1].split(" MB for ")[1].split()[0])
    mb = float(out.split("feature cache about ")[1].split()[0])
    assert mb == pytest.approx(cases * 16 * 16 * 12 * 48 * 2 / 1e6, abs=0.05)
    args = parse(str(config_file), *TINY_MODEL, "model.encoder.input_size=native", "--dry-run")
    assert args.run(args) == 0
    assert "3 x 3 tokens per slice (native size" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_print_config_shows_overrides(config_file, capsys):
    args = parse(str(config_file), "train.epochs=7", "--print-config")
    assert args.run(args) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 7


@pytest.mark.parametrize(
    "argv",
    [("CONFIG", "--resume", "RUN"), ("--resume", "RUN", "train.epochs=3"), ()],
)
def test_bad_combinations_are_user_errors(config_file, tmp_path, argv):
    argv = [str(config_file) if a == "CONFIG" else str(tmp_path) if a == "RUN" else a for a in argv]
    args = parse(*argv)
    with pytest.raises(VolsegError):
        args.run(args)
