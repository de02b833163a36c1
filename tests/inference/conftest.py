"""Tiny checkpoints (random weights, test-size ViT) and images for the inference tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from volseg.config import Config, load_config
from volseg.engine.checkpoint import make_checkpoint, save_checkpoint
from volseg.io import Geometry, Image
from volseg.models import build_model

TINY = [
    "model.encoder.name=vit_test_patch14_dinov2",
    "model.encoder.chunk=8",
    "model.head.channels=8",
    "model.head.depth=1",
    "data.slab=4",
    "inference.overlap=0.5",
]
LABELS = {0: "background", 1: "liver", 4: "tumour"}  # class 2 is written as label value 4
CLASSES = ["low", "high"]
GLIOMA = ["T1", "FLAIR"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread; two OpenMP threads sharing two busy cores make
    each small op wait on a barrier (observed 100x slower while another job ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(*overrides: str) -> Config:
    return load_config(Config, None, [*TINY, *overrides])


def segmentation_model(*overrides: str, modalities=("CT",), seed: int = 0, classes: int = 3):
    torch.manual_seed(seed)
    cfg = tiny_config(*overrides)
    model = build_model(cfg.model, num_classes=classes, modalities=list(modalities))
    return cfg, model.eval()


def write_segmentation_checkpoint(
    path: Path, *overrides: str, modalities=("CT",), seed: int = 0, labels=None
) -> Path:
    """A random tiny segmentation run; ``labels`` (value -> name) default to :data:`LABELS`."""
    labels = labels or LABELS
    cfg, model = segmentation_model(
        *overrides, modalities=modalities, seed=seed, classes=len(labels)
    )
    checkpoint = make_checkpoint(model, cfg, modalities=list(modalities), labels=labels)
    return save_checkpoint(path, checkpoint)


def write_grading_checkpoint(path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    cfg = tiny_config("model.task=classification", "model.head.name=mil", "data.intensity=mri")
    model = build_model(cfg.model, num_classes=len(CLASSES), modalities=GLIOMA).eval()
    checkpoint = make_checkpoint(model, cfg, modalities=GLIOMA, classes=CLASSES)
    return save_checkpoint(path, checkpoint)


@pytest.fixture(scope="session")
def seg_checkpoint(tmp_path_factory) -> Path:
    return write_segmentation_checkpoint(tmp_path_factory.mktemp("seg") / "run/checkpoints/best.pt")


@pytest.fixture(scope="session")
def grade_checkpoint(tmp_path_factory) -> Path:
    return write_grading_checkpoint(tmp_path_factory.mktemp("grade") / "best.pt")


def body_ct(geometry: Geometry, seed: int = 0) -> Image:
    """int16 HU volume: air around a soft-tissue body holding a bright blob (crop exercised)."""
    rng = np.random.default_rng(seed)
    shape = geometry.shape
    idx = np.indices(shape).astype(np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    r = sum(((idx[a] - centre[a]) / (shape[a] / 2.6)) ** 2 for a in range(2))
    blob = sum(((idx[a] - centre[a] - 1) / (shape[a] / 6)) ** 2 for a in range(3))
    hu = np.where(r < 1, 40.0, -1000.0)
    hu = np.where(blob < 1, 150.0, hu) + rng.normal(0, 10, shape)
    return Image(np.round(hu).astype(np.int16), geometry)
