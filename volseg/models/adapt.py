"""How much of the slice encoder trains: frozen, last N blocks, everything, or LoRA adapters.

Modes act on the ViT only. The encoder's own small input/output parts (a ``learned`` channel
adapter, a ``concat`` layer-fusion projection) stay trainable in every mode; with any of them
the encoder is not :attr:`~volseg.models.encoder.SliceEncoder.cacheable`.

- ``frozen``: no ViT parameter trains; the ViT stays in eval mode whatever ``.train()`` asks and
  runs without an autograd graph, so its features can be computed once and cached.
- ``last_n``: the last ``last_n`` blocks and the final norm train.
- ``full``: everything trains.
- ``lora``: every block's ``attn.qkv`` and ``attn.proj`` get a low-rank adapter
  ``W x + (alpha / r) B A dropout(x)`` (A: ``r x in``, Kaiming; B: ``out x r``, zeros, so training
  starts from the pretrained function); only A and B train. :func:`merge_lora` folds them into
  plain Linear layers for inference.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from volseg.errors import VolsegError
from volseg.models.encoder import SliceEncoder
from volseg.models.registry import count_parameters

MODES = ("frozen", "last_n", "full", "lora")
log = logging.getLogger(__name__)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the wrapped layer; its parameters are frozen.
        rank: rank r of the update.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout probability on the input of A.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's default
        self.to(weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in) -> (..., out)``."""
        update = self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()
        return self.base(x) + update * self.scale

    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (in eval mode: without dropout)."""
        base = self.base
        layer = nn.Linear(
            self.in_features,
            self.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(base.weight + self.scale * (self.lora_b @ self.lora_a))
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        return layer.requires_grad_(False)


def apply_adaptation(
    encoder: SliceEncoder,
    mode: str,
    *,
    last_n: int = 2,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
) -> dict[str, int | str]:
    """Choose which encoder parameters train (call once, before building the optimiser).

    Args:
        encoder: the slice encoder, changed in place.
        mode: ``"frozen"``, ``"last_n"``, ``"full"`` or ``"lora"``.
        last_n: blocks trained in ``last_n`` mode, in ``[1, depth]``.
        lora_rank: adapter rank r (``lora`` mode).
        lora_alpha: adapter scale numerator (``lora`` mode).
        lora_dropout: dropout on the adapter input, in ``[0, 1)`` (``lora`` mode).

    Returns:
        ``{"mode": mode, "trainable": n, "total": n}``: parameter element counts of the encoder,
        also logged at INFO level.

    Raises:
        VolsegError: unknown mode or out-of-range ``last_n`` / LoRA settings.
    """
    if mode not in MODES:
        raise VolsegError(f"encoder mode {mode!r} is not one of {', '.join(MODES)}")
    vit = encoder.vit
    if mode in ("last_n", "lora") and not hasattr(vit, "blocks"):
        raise VolsegError(
            f"encoder mode {mode!r} needs ViT blocks; {encoder.name} is a CNN: use frozen or full"
        )
    vit.requires_grad_(mode == "full")
    if mode == "last_n":
        depth = len(vit.blocks)
        if not 1 <= last_n <= depth:
            raise VolsegError(f"encoder last_n {last_n} must be in [1, {depth}] for {encoder.name}")
        for module in (*vit.blocks[depth - last_n :], vit.norm):
            module.requires_grad_(True)
    elif mode == "lora":
        if lora_rank < 1 or not 0.0 <= lora_dropout < 1.0:
            raise VolsegError(
                f"encoder lora rank {lora_rank} must be >= 1 and dropout {lora_dropout} in [0, 1)"
            )
        for block in vit.blocks:
            for attr in ("qkv", "proj"):
                layer = getattr(block.attn, attr)
                if isinstance(layer, nn.Linear):
                    wrapped = LoRALinear(layer, lora_rank, lora_alpha, lora_dropout)
                    setattr(block.attn, attr, wrapped)
        for module in vit.modules():  # adapters from an earlier call train again
            if isinstance(module, LoRALinear):
                module.lora_a.requires_grad_(True)
                module.lora_b.requires_grad_(True)
    encoder.adaptation = mode
    encoder.train(encoder.training)  # a frozen ViT drops to eval mode now
    counts = trainable, total = count_parameters(encoder, True), count_parameters(encoder)
    log.info("encoder %s, mode %s: %d of %d parameters trainable", encoder.name, mode, *counts)
    return {"mode": mode, "trainable": trainable, "total": total}


def merge_lora(encoder: SliceEncoder) -> int:
    """Fold every LoRA update into its base Linear, in place, for inference.

    The merged encoder has the ViT's original parameter names and no trainable ViT parameter,
    so it is switched to ``frozen`` (eval mode, cacheable features). Unmerging is not supported.

    Returns:
        The number of layers merged.
    """
    merged = 0
    for module in list(encoder.vit.modules()):
        for name, child in module.named_children():
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
                merged += 1
    if merged:
        encoder.adaptation = "frozen"
        encoder.train(encoder.training)
    return merged
