"""Options that cannot work fail once, up front, in one line (issue 13, item 1): devices and
windows for predict, overrides after flags and Ctrl-C for train.

Only what needs the real command line runs as a subprocess; the other option rules are
checked in-process on :class:`~volseg.inference.InferenceOptions`. A subprocess that fails on
an argument returns in about a second, since torch and MONAI are not imported for it
(``tests/cli/test_predict_one_line.py`` checks that); ``--device`` takes about 3 s, as telling
a missing GPU needs torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.reliability.conftest import ROOT, changed, error_line, snapshot, volseg
from volseg.errors import VolsegError
from volseg.inference import InferenceOptions

ABSENT_GPU = "cuda:99" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", ABSENT_GPU], f"error: --device {ABSENT_GPU}: "),
        (["--device", "banana"], "error: --device 'banana' is not a device; use cpu, cuda or "),
        (["--stitch-device", "banana"], "error: --stitch-device 'banana' is not a device; "),
        (["--overlap", "1.0"], "error: --overlap must be in [0, 1), got 1.0"),
        (["--sw-batch-size", "0"], "error: --sw-batch-size must be >= 1, got 0"),
    ],
)
def test_predict_refuses_a_bad_option_before_any_case(organs, seg_model, tmp_path, option, message):
    out = tmp_path / "pred"
    before = snapshot(tmp_path)
    result = volseg("predict", "--model", seg_model, "--input", organs, "--output", out, *option)
    assert result.returncode == 2
    assert error_line(result).startswith(message)
    assert changed(before, tmp_path) == []  # no output folder, no timings.csv


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overlap": -0.1}, "--overlap must be in [0, 1), got -0.1"),
        ({"overlap": float("nan")}, "--overlap must be in [0, 1), got nan"),
        ({"roi_slices": -1}, "--roi-slices must be >= 0 (0 = whole volume), got -1"),
        ({"chunk": 0}, "--chunk must be >= 1, got 0"),
        ({"top_slices": 0}, "--top-slices must be >= 1, got 0"),
        ({"mode": "median"}, "--blend 'median' is not one of gaussian, constant"),
        ({"device": "cuda:x"}, "--device 'cuda:x' is not a device; use cpu, cuda or cuda:N"),
    ],
)
def test_inference_options_refuse_what_no_case_could_run_with(options, message):
    """The same rule in Python: InferenceOptions checks itself when made."""
    with pytest.raises(VolsegError) as error:
        InferenceOptions(**options)
    assert str(error.value) == message


def test_train_takes_overrides_after_flags(train_config, tmp_path):
    before = snapshot(tmp_path)
    result = volseg("train", train_config, "--dry-run", "train.epochs=2", "train.lr=0.01")
    assert result.returncode == 0, result.stderr
    assert "x 2 epochs" in result.stdout
    assert changed(before, tmp_path) == []  # a dry run writes nothing


def test_ctrl_c_in_train_saves_then_exits_130(train_config, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "volseg", "train", train_config, "train.epochs=1000"]
    process = subprocess.Popen(
        [*map(str, argv), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "metrics.jsonl").is_file():  # one epoch done: training for sure
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert f"continue with: volseg train --resume {run_dir}" in " ".join((out + err).split())
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "Traceback" not in err
