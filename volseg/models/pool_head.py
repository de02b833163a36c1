"""Grading head ``pool``: the linear probe as a head (mask-pooled features, late modality fusion).

Nothing in it can learn which slices or which token statistics the development generator
happens to reward. On the held-out grading generator it scored above the attention-MIL head on
one 96-case set and below it on another (docs/BENCHMARKS.md, issue 22): an option, not the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from volseg.models.cls_head import (
    GradeOutput,
    check_modalities,
    drop_modalities,
    mask_on_grid,
    modalities_in_use,
)
from volseg.models.registry import HEADS
from volseg.models.slicing import slice_dim


@HEADS.register("pool")
class PoolHead(nn.Module):
    """Patient grade from the mask-weighted mean of each modality's features.

    1. Each modality's ``(E, x, y, z)`` features are averaged over the volume, each patch
       weighted by the fraction of it the ``mask`` (tumour) covers; without a mask, or for a
       sample whose mask is empty, over the whole volume.
    2. Per modality: standardisation (BatchNorm without affine parameters; its statistics skip
       samples that lack the modality), dropout, one linear layer to grade logits.
    3. The logits are averaged over the modalities present (modality dropout in training), so a
       missing modality removes one vote and changes nothing else.

    ``slice_attention`` reports the share of the pooling weight each slice carried (the mask's
    mass per slice), ``modality_attention`` the equal share of each present modality.

    Args:
        in_channels: encoder embedding width ``E``.
        num_classes: number of grades ``G``.
        modalities: every modality the head may see, in the manifest's order.
        dropout: dropout on the pooled features.
        modality_dropout: probability of dropping a present modality of a sample in training.
        slice_axis, patch_size, input_size: how a full-resolution mask is pooled onto the grid.

    Raises:
        VolsegError: no modalities, a repeated one, or ``modality_dropout`` outside ``[0, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        modalities: Sequence[str],
        dropout: float = 0.0,
        modality_dropout: float = 0.25,
        slice_axis: str = "axial",
        patch_size: int = 14,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        check_modalities(modalities, modality_dropout)
        self.modalities = tuple(modalities)
        self.modality_dropout = modality_dropout
        self.slice_axis, self.patch_size, self.input_size = slice_axis, patch_size, input_size
        self.slice_dim = slice_dim(slice_axis)
        m = len(self.modalities)
        self.norms = nn.ModuleList(nn.BatchNorm1d(in_channels, affine=False) for _ in range(m))
        self.drop = nn.Dropout(dropout)
        self.classify = nn.ModuleList(nn.Linear(in_channels, num_classes) for _ in range(m))

    def pooling_weights(self, mask: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-patch weights ``(B, 1, x, y, z)`` summing to 1 per sample, and each slice's share
        ``(B, Z)``: the mask on the grid of ``like``, uniform where it is None or empty."""
        if mask is None:
            w = like.new_ones(like.shape[0], 1, *like.shape[2:], dtype=torch.float32)
        else:
            w = mask.float()
            empty = w.flatten(1).sum(1) <= 1e-6
            w = torch.where(empty.view(-1, 1, 1, 1, 1), torch.ones_like(w), w)
        w = w / w.flatten(1).sum(1).clamp_min(1e-6).view(-1, 1, 1, 1, 1)
        plane = tuple(1 + d for d in range(3) if d != self.slice_dim)  # in-plane dims of w[:, 0]
        return w, w[:, 0].sum(dim=plane)

    def pool(self, features: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(B, E, x, y, z)`` -> ``(pooled (B, E), slice weights (B, Z))``."""
        w, per_slice = self.pooling_weights(mask, features)
        return (features.float() * w).flatten(2).sum(2), per_slice

    def _standardise(self, i: int, x: Tensor, rows: Tensor | None) -> Tensor:
        """BatchNorm ``i`` of ``(B, E)``; in training its batch statistics use ``rows`` only."""
        norm = self.norms[i]
        out = nn.functional.batch_norm(
            x, norm.running_mean, norm.running_var, training=False, eps=norm.eps
        )
        if self.training:
            if rows is None:
                rows = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            if int(rows.sum()) >= 2:
                out = out.index_put((rows,), norm(x[rows]))
        return out

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor | None = None,
        present: Tensor | None = None,
    ) -> GradeOutput:
        """Grade a batch of patients (arguments as :meth:`ClsHead.forward`).

        Raises:
            VolsegError: a modality the head does not know.
            ValueError: no modality given, or a sample with none present.
        """
        valid = modalities_in_use(features, self.modalities, present)
        first = next(iter(features.values()))
        if mask is not None:
            grid = first.shape[2:]
            mask = mask_on_grid(mask, grid, self.slice_axis, self.patch_size, self.input_size)
        w, per_slice = self.pooling_weights(mask, first)  # once: the modalities share the mask
        if self.training and self.modality_dropout > 0:
            valid = drop_modalities(valid, self.modality_dropout)
        logits, embeddings, slice_attention = [], [], {}
        for i, name in enumerate(self.modalities):
            if name not in features:
                continue
            pooled = (features[name].float() * w).flatten(2).sum(2)
            slice_attention[name] = per_slice
            rows = None if present is None else present[:, i].to(first.device, torch.bool)
            z = self._standardise(i, pooled, rows)
            logits.append(self.classify[i](self.drop(z)))
            embeddings.append(z)
        used = valid[:, [i for i, m in enumerate(self.modalities) if m in features]].float()
        share = used / used.sum(1, keepdim=True)  # (B, present modalities given)
        stacked = torch.stack(logits, 1)  # (B, K, G)
        fused = (stacked * share[..., None]).sum(1)
        embedding = (torch.stack(embeddings, 1) * share[..., None]).sum(1)
        return GradeOutput(fused, slice_attention, valid.float() / valid.sum(1, keepdim=True),
                           embedding)  # fmt: skip

