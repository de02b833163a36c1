from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from volseg.config import Config, load_config
from volseg.engine.checkpoint import make_checkpoint, rng_state, save_checkpoint, set_rng_state
from volseg.errors import VolsegError
from volseg.models import build_model, build_vit
from volseg.models.checkpoint import label_values, load_checkpoint, model_from_checkpoint

TINY = "model.encoder.name=vit_test_patch14_dinov2"
LABELS = {0: "background", 1: "necrosis", 2: "oedema", 4: "enhancing"}


def run(overrides):
    torch.manual_seed(0)
    cfg = load_config(Config, None, [TINY, "model.head.channels=8", *overrides])
    return cfg, build_model(cfg.model, num_classes=len(LABELS), modalities=["CT"]).eval()


def test_round_trip_rebuilds_the_same_model(tmp_path):
    cfg, model = run([])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    checkpoint = make_checkpoint(
        model, cfg, modalities=["CT"], labels=LABELS, optimizer=optimizer, epoch=7
    )
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", checkpoint)
    back = load_checkpoint(tmp_path / "run")  # a run folder resolves to its best checkpoint
    assert back["epoch"] == 7 and label_values(back) == [0, 1, 2, 4]
    assert (
        back["versions"]["torch"] != "not installed"
        and back["config"]["model"]["head"]["channels"] == 8
    )
    rebuilt = model_from_checkpoint(back).eval()
    x = torch.rand(1, 1, 20, 17, 4)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_frozen_encoder_from_a_weights_file_is_not_stored(tmp_path):
    torch.manual_seed(3)
    weights = tmp_path / "vit.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build_vit("vit_test_patch14_dinov2").state_dict().items()},
        weights,
    )
    cfg, model = run([f"model.encoder.weights={weights}"])
    checkpoint = make_checkpoint(model, cfg, modalities=["CT"], labels=LABELS)
    assert not any(k.startswith("encoder.vit.") for k in checkpoint["model"])
    assert checkpoint["encoder_source"]["external_keys"]
    path = save_checkpoint(tmp_path / "c.pt", checkpoint)
    x = torch.rand(1, 1, 16, 16, 3)
    torch.testing.assert_close(model_from_checkpoint(load_checkpoint(path)).eval()(x), model(x))
    weights.unlink()
    with pytest.raises(VolsegError, match="vit.safetensors"):
        model_from_checkpoint(load_checkpoint(path))


def test_not_a_checkpoint_and_unsafe_pickles_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VolsegError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "volseg-checkpoint/1", "evil": random.Random()}, tmp_path / "evil.pt")
    with pytest.raises(VolsegError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(VolsegError, match="not a volseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(VolsegError, match="no checkpoints"):
        load_checkpoint(tmp_path)


def test_rng_state_restores_every_generator(tmp_path):
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    path = save_checkpoint(tmp_path / "rng.pt", {"format": "volseg-checkpoint/1", "rng": state})
    set_rng_state(load_checkpoint(path, required=("rng",))["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
