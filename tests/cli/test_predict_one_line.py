"""``volseg predict`` as one line (issue 13, item 2), and its mistakes caught before the heavy
imports (item 1): each test runs the command a user types, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.inference.conftest import body_ct, write_segmentation_checkpoint
from tests.inference.test_cohort import geometry
from tests.reliability.conftest import ROOT, changed, error_line, snapshot, volseg
from volseg.inference import InferenceOptions, as_predictor
from volseg.io import read_image, write_image


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    a = write_segmentation_checkpoint(folder / "fold0/checkpoints/best.pt", seed=0)
    b = write_segmentation_checkpoint(folder / "fold1/checkpoints/best.pt", seed=5)
    return a.parents[1], b.parents[1]


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return write_image(body_ct(geometry("oblique"), 2), tmp_path_factory.mktemp("in") / "ct.nii.gz")


def test_one_line_writes_that_file_from_an_ensemble_and_a_label_subset(runs, ct, tmp_path):
    out = tmp_path / "out" / "seg.nii.gz"
    fold0, fold1 = runs
    argv = ["predict", "-i", ct, "-o", out, "--model", fold0, "--model", fold1]
    result = volseg(*argv, "--roi-subset", "tumour", "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["seg.nii.gz"]  # no folder, no tables
    written = read_image(out)
    options = InferenceOptions(roi_subset="tumour", device="cpu")
    expected = as_predictor([fold0, fold1], options=options).predict(read_image(ct)).labels
    np.testing.assert_array_equal(written.array, expected.array)
    assert written.geometry.matches(expected.geometry)
    assert set(np.unique(written.array)) == {0, 4}  # the tumour keeps its label value


def other_labels(tmp_path):
    path = tmp_path / "spleen/checkpoints/best.pt"
    labels = {0: "background", 1: "spleen", 4: "tumour"}
    return write_segmentation_checkpoint(path, labels=labels).parents[1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("folder", "error: --output {tmp}/seg.nii.gz names one label-map file, but --input "),
        ("typo", "error: --roi-subset 'livr' is not a label of {fold0}; did you mean 'liver'? "),
        ("labels", "error: {fold0} and {tmp}/spleen cannot be ensembled: their label maps differ"),
    ],
)
def test_predict_mistakes_are_one_line_and_write_nothing(runs, ct, tmp_path, case, message):
    fold0 = runs[0]
    argv = ["predict", "-i", ct, "-o", tmp_path / "seg.nii.gz", "--model", fold0]
    if case == "folder":
        argv[2] = ct.parent
    elif case == "typo":
        argv += ["--roi-subset", "livr"]
    else:
        argv += ["--model", other_labels(tmp_path)]
    before = snapshot(tmp_path)
    result = volseg(*argv, "--device", "cpu")
    assert result.returncode == 2
    assert error_line(result).startswith(message.format(tmp=tmp_path, fold0=fold0))
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model", "nope", "-i", "nope.nii.gz", "-o", "out"],
        ["predict", "--model", "{run}", "-i", "nope.nii.gz", "-o", "seg.nii.gz"],
        ["predict", "--model", "{run}", "-i", "{run}", "-o", "out", "--overlap", "2"],
        ["predict", "--model", "{run}", "-i", "{run}", "-o", "seg.nii.gz"],
        ["predict", "--model", "{run}"],
    ],
)
def test_argument_and_file_errors_import_neither_torch_nor_monai(runs, tmp_path, argv):
    """Errors a user makes come back before the heavy imports (about 7 s of them)."""
    argv = [word.format(run=runs[0]) for word in argv]
    code = (
        "import sys\n"
        "from volseg.cli.main import main\n"
        "try:\n"
        f"    status = main({argv!r})\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai', 'timm'})\n"
        "print(status, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env()
    )
    assert result.stdout.strip() == "2 []", result.stderr
    assert "error: " in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"]])
def test_help_imports_neither_torch_nor_monai(argv):
    code = (
        "import sys\n"
        "from volseg.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env()
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_public_names_still_import():
    import volseg
    import volseg.inference as inference

    assert callable(volseg.predict_volume) and callable(inference.predict_cohort)
    assert {"Ensemble", "InferenceOptions", "Predictor"} <= set(dir(inference))


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
