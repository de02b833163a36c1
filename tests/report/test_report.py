"""volseg report on real tiny evaluation, run and prediction folders."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import ndimage

from volseg.data import load_manifest
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image, write_like
from volseg.metrics import evaluate_classification, evaluate_segmentation
from volseg.report import paired_test, write_report
from volseg.report.overlays import radiological_slices, to_lps
from volseg.synth import synthesize_glioma, synthesize_organs

FAST = {"workers": 1, "n_resamples": 200}
RENDER_TOOL = Path(__file__).resolve().parents[2] / "tools" / "render_report.py"


def render_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_report", RENDER_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_segmentation_eval(root: Path, name: str, *, worse: int = 0) -> Path:
    """3 organ phantoms; predictions shifted / eroded by case (and by ``worse``); evaluated."""
    manifest = root / "organs" / "manifest.json"
    if not manifest.is_file():
        synthesize_organs(root / "organs", cases=3, shape=(32, 32, 16), seed=0)
    preds = root / name / "predictions"
    for k, case in enumerate(load_manifest(manifest).cases):
        ref = read_image(case.label)
        pred = np.roll(ref.array, k + worse, axis=0)
        if k == 2:
            pred = np.where(ndimage.binary_erosion(pred > 0), pred, 0)
        write_like(pred.astype(np.uint8), ref, preds / f"{case.id}.nii.gz", label=True)
    rows = [
        {
            "case_id": c.id,
            "status": "ok",
            "read": 0.1,
            "preprocess": 0.2,
            "encode": 1.5,
            "head": 0.3,
            "postprocess": 0.05,
            "write": 0.1,
            "total": 2.25,
            "error": "",
        }
        for c in load_manifest(manifest).cases
    ]
    _write_csv(preds / "timings.csv", rows)
    out = root / name / "evaluation"
    evaluate_segmentation(preds, manifest, out, **FAST)
    return out


def make_grading_eval(root: Path, name: str = "grading", *, seed: int = 0) -> Path:
    manifest = synthesize_glioma(root / "glioma", cases=8, shape=(16, 16, 8), seed=0)
    classes = load_manifest(manifest).classes
    rng = np.random.default_rng(seed)
    rows = []
    for case in load_manifest(manifest).cases:
        p = float(np.clip(0.35 * (case.target == classes[-1]) + rng.uniform(0.1, 0.6), 0.01, 0.99))
        rows.append({"case_id": case.id, f"prob_{classes[0]}": 1 - p, f"prob_{classes[1]}": p})
    _write_csv(root / name / "predictions.csv", rows)
    out = root / name / "evaluation"
    evaluate_classification(root / name / "predictions.csv", manifest, out, n_resamples=200)
    return out


def make_run(root: Path) -> Path:
    run = root / "runs" / "organs_frozen"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "name: organs_frozen\ndata:\n  manifest: organs/manifest.json\n  fold: 0\n  folds: 3\n"
        "model:\n  task: segmentation\n  encoder:\n    name: vit_small_patch14_dinov2\n"
        "    mode: frozen\n    weights: null\n    slice_axis: axial\n"
        "  head:\n    name: seg3d\n    channels: 32\n    depth: 2\n"
        "train:\n  epochs: 4\n  batch_size: 2\n  lr: 0.003\n  amp: auto\n"
    )
    rows = [
        {
            "epoch": e,
            "step": 10 * e,
            "lr": 0.003 / e,
            "train_loss": 1.0 / e,
            "val_dice_mean": 0.2 * e if e % 2 == 0 else "",
            "epoch_seconds": 12.5,
        }
        for e in range(1, 5)
    ]
    _write_csv(run / "metrics.csv", rows)
    (run / "params.json").write_text(
        json.dumps(
            {
                "encoder_total": 22_056_576,
                "encoder_trainable": 0,
                "head_total": 120_000,
                "head_trainable": 120_000,
                "model_total": 22_176_576,
                "model_trainable": 120_000,
            }
        )
    )
    (run / "splits.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}] * 3))
    return run


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    make_segmentation_eval(root, "frozen")
    make_segmentation_eval(root, "lora", worse=1)
    make_grading_eval(root, "grading")
    make_grading_eval(root, "grading_b", seed=3)
    make_run(root)
    return root


@pytest.fixture(scope="module")
def report(world) -> Path:
    return write_report([world], world / "report", title="Tiny <report>")


def _html(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def test_html_is_self_contained_and_escaped(report):
    html = _html(report)
    assert '<img src="data:image/png;base64,' in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "url(" not in html and "<script" not in html and "<link" not in html
    assert "<title>Tiny &lt;report&gt;</title>" in html


def test_per_class_table_holds_the_summary_numbers(world, report):
    html = _html(report)
    summary = json.loads((world / "frozen" / "evaluation" / "summary.json").read_text())
    for key, name in summary["labels"].items():
        mean, std = summary["mean"][key]["Dice"], summary["std"][key]["Dice"]
        lo, hi = summary["ci95"][key]["Dice"]
        cells = [
            f"{mean:.3f} ± {std:.3f}",
            f"{summary['median'][key]['Dice']:.3f}",
            f"[{lo:.3f}, {hi:.3f}]",
        ]
        row = f"<tr><td>{name}</td>" + "".join(f"<td>{c}</td>" for c in cells)
        assert row in html
    foreground = summary["foreground_mean"]["Dice"]
    assert f"<td>foreground mean</td><td>{foreground:.3f}</td>" in html


def test_report_states_conventions_model_timing_and_environment(world, report):
    html = _html(report)
    summary = json.loads((world / "frozen" / "evaluation" / "summary.json").read_text())
    for key, text in summary["conventions"].items():
        assert f"<dt>{key}</dt>" in html
        assert text.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;") in html
    for text in (
        "vit_small_patch14_dinov2",
        "encoder 0 trainable of 22,056,576",
        "2 train / 1 validation cases",
        "Timing and memory",
        "<td>encode</td>",
        "0m 50s",
        "git commit",
        "<dt>numpy</dt>",
        "ROC",
        "Confusion matrix",
    ):
        assert text in html, text


def test_several_evaluations_are_compared_with_wilcoxon(report):
    html = _html(report)
    assert "Comparison: segmentation" in html and "Comparison: grading" in html
    assert "Wilcoxon signed-rank" in html
    # 3 segmentation cases: too few for the test, and the reason is given
    assert "n/a (n = 3 non-zero differences &lt; 6" in html
    # 8 grading cases with p(true class) differences: the test runs
    assert re.search(r"W = [0-9.]+, p = [0-9.e-]+ \(n = \d+ non-zero of 8 pairs\)", html)


def test_markdown_links_existing_pngs_and_overlays_exist(report):
    md = report.with_name("report.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert links and "data:image" not in md
    for link in links:
        assert (report.parent / link).stat().st_size > 1000
    assert sorted(p.name for p in (report.parent / "figures").glob("*.png")) == sorted(
        Path(link).name for link in links
    )
    for rank in ("best", "median", "worst"):
        assert f"figures/frozen_evaluation_overlay_{rank}.png" in links
    assert "figures/training_runs_organs_frozen.png" in links


def test_missing_or_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(VolsegError, match="nope: not found") as error:
        write_report([tmp_path / "nope"], tmp_path / "out")
    assert "\n" not in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolsegError, match="holds no evaluation") as error:
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "report.html").exists()


def test_broken_summary_names_the_file(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "summary.json").write_text("{not json")
    with pytest.raises(VolsegError, match=r"ev/summary.json: cannot read as JSON"):
        write_report([tmp_path / "ev"], tmp_path / "out")


def test_sections_without_files_are_skipped(world, tmp_path):
    html = _html(write_report([world / "frozen" / "predictions"], tmp_path / "a"))
    assert "Timing and memory" in html and "Environment" in html
    for absent in ("Segmentation results", "Training:", "Model:", "Dataset", "Comparison"):
        assert absent not in html
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: bare\n")
    (run / "metrics.csv").write_text("epoch,train_loss\n1,0.9\n2,0.5\n")
    html = _html(write_report([run], tmp_path / "b"))
    assert "not recorded (no params.json" in html and "Training: run" in html


def test_overlays_find_images_through_manifest_option(world, tmp_path):
    out = tmp_path / "eval"
    evaluate_segmentation(
        world / "frozen" / "predictions", world / "organs" / "labelsTr", out, **FAST
    )
    (out / "per_case.csv").unlink()
    html = _html(write_report([out], tmp_path / "a"))
    assert html.count("pass --manifest to draw the scan.</figcaption>") == 3
    manifest = world / "organs" / "manifest.json"
    html = _html(write_report([out], tmp_path / "b", manifest=manifest))
    assert "pass --manifest" not in html and "synthetic_organs" in html


def test_paired_test_rules():
    assert paired_test([0.1, -0.2, 0.3]).describe().startswith("n/a (n = 3 non-zero")
    assert paired_test([0.0] * 8).reason == "all 8 differences are zero"
    assert paired_test([np.nan, np.nan]).reason == "no paired case with both values"
    d = [0.05, 0.1, -0.02, 0.2, 0.15, 0.08, 0.0, np.nan]
    test = paired_test(d)
    from scipy.stats import wilcoxon

    expected = wilcoxon([0.05, 0.1, -0.02, 0.2, 0.15, 0.08])
    assert (test.n, test.nonzero) == (7, 6)
    assert test.pvalue == pytest.approx(expected.pvalue)
    assert test.statistic == pytest.approx(expected.statistic)


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.array([[0, 0, -1.0], [1, 0, 0], [0, -1, 0]])],
)
def test_overlays_are_radiological_with_physical_spacing(direction):
    geometry = Geometry((4, 5, 6), (0.5, 1.0, 3.0), (0, 0, 0), direction)
    lps = [np.zeros(geometry.shape) for _ in range(3)]
    index = np.indices(geometry.shape).astype(float)
    for axis in range(3):  # physical LPS coordinate of every voxel, per axis
        lps[axis] = sum(
            geometry.direction[axis, a] * geometry.spacing[a] * index[a] for a in range(3)
        )
    image = Image(lps[0], geometry)
    x, spacing = to_lps(lps[0], image)
    y, _ = to_lps(lps[1], image)
    z, _ = to_lps(lps[2], image)
    assert np.all(np.diff(x, axis=0) > 0) and np.all(np.diff(y, axis=1) > 0)
    assert np.all(np.diff(z, axis=2) > 0)
    assert np.allclose(np.diff(x, axis=0), spacing[0]) and np.allclose(
        np.diff(z, axis=2), spacing[2]
    )
    centre = (1, 1, 1)
    (_, ax_x, _, _), (_, cor_x, _, _), _ = radiological_slices(x, spacing, centre)
    (_, ax_y, ax_px, _), _, (_, sag_y, _, _) = radiological_slices(y, spacing, centre)
    _, (_, cor_z, _, letters), _ = radiological_slices(z, spacing, centre)
    assert np.all(np.diff(ax_x, axis=1) > 0)  # screen right = patient's left
    assert np.all(np.diff(ax_y, axis=0) > 0)  # screen down = posterior (anterior up)
    assert np.all(np.diff(cor_x, axis=1) > 0)
    assert np.all(np.diff(cor_z, axis=0) < 0)  # superior up
    assert np.all(np.diff(sag_y, axis=1) > 0)  # anterior on the left
    assert ax_px == (spacing[0], spacing[1]) and letters == ("S", "I", "R", "L")


def test_organ_phantoms_show_the_liver_on_the_screen_left(world):
    for case in load_manifest(world / "organs" / "manifest.json").cases:
        label = read_image(case.label)
        lps, _ = to_lps(label.array, label)
        centre = {v: np.argwhere(lps == v).mean(axis=0) for v in (1, 2, 3)}
        assert centre[1][0] < centre[2][0]  # liver (patient's right) left of the spleen
        assert centre[3][1] > centre[1][1]  # kidney posterior to the liver
        assert centre[2][2] > centre[3][2]  # spleen superior to the kidney


def test_cli_writes_the_report(world, tmp_path, capsys):
    import argparse

    from volseg.cli import report

    parser = argparse.ArgumentParser(prog="volseg")
    report.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(world / "grading"), "--out", str(tmp_path / "r")])
    assert args.run(args) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    assert "report.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["report", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_render_tool_without_chromium_says_how_to_install(report, capsys):
    assert render_tool().main([str(report), "--chromium", "/nonexistent/chromium"]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(render_tool().find_chromium() is None, reason="chromium is not installed")
def test_render_tool_screenshots_the_report(report, tmp_path):
    from PIL import Image as PILImage

    tool = render_tool()
    png = tool.render(report, tmp_path / "page.png", width=900, max_height=1200)
    with PILImage.open(png) as page:
        assert page.size == (900, 1200)
        pixels = np.asarray(page.convert("L"))
    assert pixels.min() < 100 and pixels.max() > 200  # text and tables drawn, not a blank page
    height = tool.page_height(report, 900, tool.find_chromium())
    assert height is not None and height > 4000  # longer than the old fixed window
    with PILImage.open(tool.render(report, tmp_path / "whole.png", width=900)) as page:
        assert page.size == (900, height)  # the whole page by default
        bottom = np.asarray(page.convert("L"))[-height // 20 :]
    assert bottom.min() < 100  # the environment table at the end is in the picture
