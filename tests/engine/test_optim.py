"""Optimiser groups, warm-up + cosine schedule, mixed-precision choice, losses."""

from __future__ import annotations

import math

import pytest
import torch

from volseg.config import Config, load_config
from volseg.engine.losses import class_weights, segmentation_loss
from volseg.engine.optim import make_optimizer, make_scheduler, warmup_cosine
from volseg.errors import VolsegError
from volseg.models import build_model


def test_schedule_warms_up_linearly_then_decays_to_zero():
    factor = warmup_cosine(total_steps=10, warmup_steps=4)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and factor(10) == pytest.approx(0.0)
    assert factor(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    decay = [factor(s) for s in range(4, 11)]
    assert decay == sorted(decay, reverse=True)


def test_lora_encoder_and_head_get_their_own_learning_rates():
    torch.manual_seed(0)
    cfg = load_config(
        Config,
        None,
        [
            "model.encoder.name=vit_test_patch14_dinov2",
            "model.encoder.mode=lora",
            "model.head.channels=8",
            "train.lr=1e-3",
            "train.encoder_lr=1e-5",
            "train.weight_decay=0.1",
        ],
    )
    model = build_model(cfg.model, num_classes=3, modalities=["CT"])
    optimizer = make_optimizer(model, cfg.train)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"head", "head_no_decay", "encoder"}  # LoRA A/B are matrices
    assert groups["encoder"]["lr"] == 1e-5 and groups["head"]["lr"] == 1e-3
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in groups["head_no_decay"]["params"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    scheduler = make_scheduler(optimizer, total_steps=4, warmup_steps=2)
    assert groups["head"]["lr"] == pytest.approx(0.5e-3)  # step 0 of the warm-up
    optimizer.step()
    scheduler.step()
    assert groups["encoder"]["lr"] == pytest.approx(1e-5)


def test_balanced_class_weights_invert_the_frequencies():
    weights = class_weights("balanced", [0, 0, 0, 1], 2)
    assert torch.allclose(weights, torch.tensor([0.5, 1.5]))
    assert class_weights(None, [0, 1], 2) is None
    assert class_weights([1.0, 2.0], [0, 1], 2).tolist() == [1.0, 2.0]
    with pytest.raises(VolsegError, match="class_weights"):
        class_weights([1.0], [0, 1], 2)


def test_segmentation_loss_is_low_for_a_perfect_prediction():
    label = torch.zeros(1, 1, 6, 6, 4, dtype=torch.long)
    label[..., 2:4, 2:4, :] = 1
    perfect = torch.cat([(label == 0).float(), (label == 1).float()], 1) * 20 - 10
    loss = segmentation_loss()
    assert float(loss(perfect, label)) < 1e-3 < float(loss(-perfect, label))
