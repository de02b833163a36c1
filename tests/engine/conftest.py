"""Tiny synthetic datasets and configs for engine tests (vit_test encoder, 32 x 32 x 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from volseg.config import Config, load_config
from volseg.synth import synthesize_glioma, synthesize_organs

SHAPE = (32, 32, 12)
TINY_MODEL = [
    "model.encoder.name=vit_test_patch14_dinov2",
    "model.head.channels=8",
    "model.head.depth=1",
]


@pytest.fixture(scope="session")
def organs(tmp_path_factory) -> Path:
    """Manifest of 6 organ phantoms."""
    return synthesize_organs(tmp_path_factory.mktemp("organs"), cases=6, shape=SHAPE, seed=1)


@pytest.fixture(scope="session")
def glioma(tmp_path_factory) -> Path:
    """Manifest of 6 two-grade glioma phantoms (4 modalities)."""
    return synthesize_glioma(tmp_path_factory.mktemp("glioma"), cases=6, shape=SHAPE, seed=1)


def tiny_config(manifest: Path, out: Path, *overrides: str, task: str = "segmentation") -> Config:
    """A config that trains in a few seconds on CPU."""
    task_keys = (
        ["model.task=segmentation", "data.mirror=false"]
        if task == "segmentation"
        else ["model.task=classification", "model.head.name=mil", "data.intensity=mri"]
    )
    return load_config(
        Config,
        None,
        [
            f"data.manifest={manifest}",
            f"output_dir={out}",
            "name=tiny",
            "data.folds=3",
            "data.slab=8",
            *TINY_MODEL,
            *task_keys,
            "train.epochs=2",
            "train.batch_size=2",
            "train.val_every=1",
            "train.warmup_epochs=1",
            "train.num_workers=0",
            *overrides,
        ],
    )
