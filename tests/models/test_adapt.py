"""Adaptation modes: which encoder parameters train, LoRA adapters and their merge."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.models import LoRALinear, SliceEncoder, apply_adaptation, merge_lora

TINY = "vit_test_patch14_dinov2"  # 48 wide, 3 blocks


def make(**kwargs) -> SliceEncoder:
    torch.manual_seed(0)
    return SliceEncoder(TINY, **kwargs)


def train_step(encoder: SliceEncoder) -> nn.Module:
    """One AdamW step (with weight decay) over encoder + a head; returns the head."""
    head = nn.Conv3d(encoder.out_channels, 2, kernel_size=1)
    model = nn.ModuleList([encoder, head]).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.rand(1, 1, 20, 16, 2, generator=torch.Generator().manual_seed(1))
    head(encoder(x)).square().mean().backward()
    optimiser.step()
    return head


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def with_grad(module: nn.Module) -> set[str]:
    return {k for k, p in module.named_parameters() if p.grad is not None}


def test_frozen_encoder_never_changes_and_stays_in_eval() -> None:
    encoder = make()
    counts = apply_adaptation(encoder, "frozen")
    assert counts["trainable"] == 0 and counts["total"] > 0
    before = snapshot(encoder)
    head = train_step(encoder)
    assert with_grad(encoder) == set()
    for name, value in encoder.named_parameters():
        assert torch.equal(value, before[name]), name
    assert with_grad(head) == {"weight", "bias"}  # the head still learns
    assert encoder.training and not encoder.vit.training
    assert not any(m.training for m in encoder.vit.modules())
    assert encoder.cacheable
    assert not encoder(torch.rand(1, 1, 14, 14, 1)).requires_grad  # no graph: cacheable


def test_frozen_with_learned_adapter_trains_only_the_adapter() -> None:
    encoder = make(channel_adapter="learned")
    counts = apply_adaptation(encoder, "frozen")
    assert counts["trainable"] == 3 + 3  # Conv2d(1, 3, 1): 3 weights + 3 biases
    assert not encoder.cacheable
    train_step(encoder)
    assert with_grad(encoder) == {"adapter.weight", "adapter.bias"}
    assert not encoder.vit.training


def test_last_n_trains_only_the_last_blocks_and_norm() -> None:
    encoder = make()
    counts = apply_adaptation(encoder, "last_n", last_n=1)
    train_step(encoder)
    grads = with_grad(encoder)
    assert grads and all(k.startswith(("vit.blocks.2.", "vit.norm.")) for k in grads)
    expected = {
        k for k, _ in encoder.named_parameters() if k.startswith(("vit.blocks.2.", "vit.norm."))
    }
    assert grads == expected
    assert counts["trainable"] == sum(
        p.numel() for k, p in encoder.named_parameters() if k in expected
    )
    assert encoder.vit.training and not encoder.cacheable


def test_full_trains_everything() -> None:
    encoder = make()
    counts = apply_adaptation(encoder, "full")
    assert counts["trainable"] == counts["total"] == sum(p.numel() for p in encoder.parameters())
    train_step(encoder)
    assert with_grad(encoder) == {k for k, _ in encoder.named_parameters()}


def test_lora_trains_only_adapters_with_the_expected_count() -> None:
    encoder = make()
    x = torch.rand(1, 1, 20, 16, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = encoder.eval()(x)
    rank = 4
    counts = apply_adaptation(encoder, "lora", lora_rank=rank, lora_alpha=8.0)
    wrapped = [m for m in encoder.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 3  # qkv and proj of 3 blocks
    assert {type(b.attn.qkv) for b in encoder.vit.blocks} == {LoRALinear}
    expected = sum(rank * (m.in_features + m.out_features) for m in wrapped)
    assert expected == 3 * rank * ((48 + 144) + (48 + 48))
    assert counts["trainable"] == expected
    with torch.no_grad():  # B starts at zero: the pretrained function is unchanged
        torch.testing.assert_close(encoder.eval()(x), plain)
    train_step(encoder)
    grads = with_grad(encoder)
    assert grads and all(k.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for k in grads)
    assert len(grads) == 2 * len(wrapped)


def test_lora_merge_gives_the_same_output_and_plain_layers() -> None:
    encoder = make()
    original_keys = set(encoder.state_dict())
    apply_adaptation(encoder, "lora", lora_rank=4, lora_dropout=0.1)
    train_step(encoder)  # B is no longer zero
    assert any(m.lora_b.abs().sum() > 0 for m in encoder.modules() if isinstance(m, LoRALinear))
    x = torch.rand(2, 1, 20, 16, 2, generator=torch.Generator().manual_seed(3))
    encoder.eval()
    with torch.no_grad():
        unmerged = encoder(x)
    assert merge_lora(encoder) == 6
    assert not any(isinstance(m, LoRALinear) for m in encoder.modules())
    assert set(encoder.state_dict()) == original_keys
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), unmerged, atol=1e-5, rtol=1e-5)
    assert encoder.adaptation == "frozen" and encoder.cacheable
    encoder.train()
    assert not encoder.vit.training


def test_lora_linear_scaling() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, rank=2, alpha=6.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(3, 6)
    expected = base(x) + 3.0 * (x @ layer.lora_a.T @ layer.lora_b.T)
    torch.testing.assert_close(layer(x), expected)
    assert not base.weight.requires_grad and layer.lora_a.requires_grad


def test_counts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    encoder = make()
    with caplog.at_level(logging.INFO, logger="volseg.models.adapt"):
        counts = apply_adaptation(encoder, "last_n", last_n=2)
    assert counts["mode"] == "last_n"
    assert f"{counts['trainable']} of {counts['total']} parameters trainable" in caplog.text


@pytest.mark.parametrize(
    ("mode", "kwargs", "match"),
    [
        ("partial", {}, "mode"),
        ("last_n", {"last_n": 4}, "last_n"),
        ("last_n", {"last_n": 0}, "last_n"),
        ("lora", {"lora_rank": 0}, "rank"),
        ("lora", {"lora_dropout": 1.0}, "dropout"),
    ],
)
def test_bad_settings(mode: str, kwargs: dict, match: str) -> None:
    with pytest.raises(VolsegError, match=match):
        apply_adaptation(make(), mode, **kwargs)
