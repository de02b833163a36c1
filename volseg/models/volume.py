"""The tumour's standardised log volume, read from a mask: the input of the ``size`` head and the
``mil`` head's optional volume term (``model.head.lesion_volume``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LogVolume(nn.Module):
    """``(B, 1, X, Y, Z)`` mask -> ``(B, 1)`` standardised ``log(1 + voxels)``.

    The mean and variance are exact running moments of every training log volume seen (not
    BatchNorm's batch statistics: the uncached engine trains a grading run one case per forward
    when the cases' grids differ, and a batch of one has no variance). Count the mask at image
    resolution on a common ``data.spacing``, so the voxel count is the volume in mm³ up to a
    constant factor, which the standardisation removes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(1))
        self.register_buffer("squares", torch.zeros(1))  # sum of squared deviations

    @staticmethod
    def log_volume(mask: Tensor) -> Tensor:
        """``(B, 1, X, Y, Z)`` mask -> ``(B, 1)`` ``log(1 + voxels)`` (a soft mask: its mass)."""
        return torch.log1p(mask.float().flatten(1).sum(1, keepdim=True))

    def _update_moments(self, x: Tensor) -> None:
        """Merge the batch ``x (B, 1)`` into the running moments (Chan et al.'s pairwise update)."""
        x = x.detach()
        n, m = x.shape[0], x.mean(0)
        total = self.seen + n
        delta = m - self.mean
        self.squares.add_(((x - m) ** 2).sum(0) + delta**2 * self.seen * n / total)
        self.mean.add_(delta * n / total)
        self.seen.copy_(total)

    def standardise(self, x: Tensor) -> Tensor:
        """``(x - mean) / sd`` over the training log volumes seen (sd 1 before two were seen)."""
        var = self.squares / self.seen if self.seen >= 2 else torch.ones_like(self.squares)
        return (x - self.mean) / (var + 1e-5).sqrt()

    def forward(self, mask: Tensor) -> Tensor:
        """The standardised log volume of each sample; in training the moments learn it first."""
        x = self.log_volume(mask)
        if self.training:
            self._update_moments(x)
        return self.standardise(x)
