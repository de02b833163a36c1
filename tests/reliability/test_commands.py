"""Commands given odd arguments (issue 14, finding 12 and the FIFO config; issue 13, item 4):
`volseg synth` with a planet-sized --shape, a file as --out, or a folder already holding data;
`volseg train` and `volseg models` with a config that is a FIFO; `volseg models KEY=VALUE`;
a checkpoint without its model, or holding Python objects (an unsafe pickle)."""

from __future__ import annotations

import os
import random

import pytest
import torch

from tests.reliability.conftest import changed, error_line, snapshot, volseg

TINY = ("--dataset", "organs", "--size", "tiny", "--cases", "2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--shape", "100000", "100000", "100000"],
            "error: --shape 100000 100000 100000 is 1e+15 voxels per volume; synth draws at "
            "most 134,217,728 (512^3) with no side over 2048; pick a smaller --shape (the "
            "'large' size is 512 512 150)",
        ),
        (["--out", "{file}"], "error: {file}: --out names a file, not a folder; pass a folder"),
    ],
)
def test_synth_refuses_before_drawing_anything(tmp_path, argv, message):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    argv = [a.format(file=file) for a in argv]
    before = snapshot(tmp_path)
    result = volseg("synth", "--out", tmp_path / "out", *TINY, *argv, timeout=60)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == message.format(file=file)
    assert changed(before, tmp_path) == []


def test_synth_into_a_folder_with_data_needs_overwrite_which_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    assert volseg("synth", "--out", out, *TINY, "--cases", "3").returncode == 0
    mine = out / "organs" / "imagesTr" / "notes.txt"
    mine.write_text("mine\n")
    before = snapshot(tmp_path)
    again = volseg("synth", "--out", out, *TINY)
    assert again.returncode == 2
    assert error_line(again) == (
        f"error: {out / 'organs'}: folder is not empty; pass --overwrite to replace the volseg "
        "synth output there, or choose another --out"
    )
    assert changed(before, tmp_path) == []
    replaced = volseg("synth", "--out", out, *TINY, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in (out / "organs" / "imagesTr").iterdir()) == [
        "notes.txt", "organs_000.nii.gz", "organs_001.nii.gz"  # organs_002 was synth's: gone
    ]  # fmt: skip
    foreign = tmp_path / "dataset"
    (foreign / "organs").mkdir(parents=True)
    (foreign / "organs" / "scan.nii.gz").write_bytes(b"not synth's")
    refused = volseg("synth", "--out", foreign, *TINY, "--overwrite")
    assert refused.returncode == 2
    assert error_line(refused) == (
        f"error: {foreign / 'organs'}: holds files that volseg synth did not write (no "
        "synth.json); --overwrite only replaces a synth output, so choose another --out"
    )
    assert (foreign / "organs" / "scan.nii.gz").read_bytes() == b"not synth's"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("command", ["train", "models"])
def test_a_config_that_is_a_fifo_is_refused_not_waited_on(tmp_path, command):
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    result = volseg(command, config, timeout=60)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"error: {config}: config file is a named pipe (FIFO), not a regular file; save it as "
        "a regular file and pass that"
    )


def test_models_takes_overrides_without_a_config(tmp_path):
    result = volseg("models", "model.head.channels=24", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "heads with channels=24," in result.stdout


@pytest.mark.parametrize("kind", ["no_model", "unsafe"])
def test_predict_refuses_a_bad_checkpoint_in_one_line_of_its_own(organs, seg_model, tmp_path, kind):
    checkpoint = torch.load(seg_model / "checkpoints" / "best.pt", weights_only=True)
    if kind == "no_model":
        del checkpoint["model"]
    else:
        checkpoint["extra"] = random.Random(0)  # unpickling it could run any code
    path = tmp_path / f"{kind}.pt"
    torch.save(checkpoint, path)
    out = tmp_path / "pred"
    image = organs.parent / "imagesTr" / "organs_000.nii.gz"
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", path, "--input", image, "--output", out)
    assert result.returncode == 2, result.stderr
    messages = {
        "no_model": "volseg checkpoint without the key 'model'; it was cut down or edited, use "
        "a checkpoint as volseg train wrote it",
        "unsafe": "holds Python objects volseg does not load (unsafe pickle); load it only if "
        "you trust its source, and re-save the checkpoint as tensors, numbers, strings, lists "
        "and dicts (as volseg train writes it)",
    }
    assert error_line(result) == f"error: {path}: {messages[kind]}"
    assert changed(before, tmp_path) == []
