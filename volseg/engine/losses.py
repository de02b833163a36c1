"""Training losses: Dice + cross-entropy for segmentation, weighted cross-entropy for grading."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

from volseg.errors import VolsegError


def segmentation_loss() -> nn.Module:
    """MONAI's Dice + cross-entropy on logits ``(B, K, X, Y, Z)`` and labels ``(B, 1, X, Y, Z)``.

    Soft Dice over the foreground classes (background excluded, as in nnU-Net), per sample and
    class, averaged; cross-entropy over every voxel and class; the two summed with weight 1.
    A class absent from a sample's slab and not predicted scores a Dice of 1 (smoothing 1e-5).
    """
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )


def class_weights(
    setting: Sequence[float] | str | None, targets: Sequence[int], num_classes: int
) -> Tensor | None:
    """Cross-entropy class weights from ``train.class_weights``.

    Args:
        setting: None (equal weights), ``"balanced"`` (inverse class frequency in ``targets``,
            scaled to mean 1 over the classes present), or one weight per class.
        targets: class ids of the training cases.
        num_classes: number of classes ``G``.

    Returns:
        float32 ``(G,)`` or None.

    Raises:
        VolsegError: a list of the wrong length.
    """
    if setting is None:
        return None
    if setting == "balanced":
        counts = Counter(int(t) for t in targets)
        weights = torch.tensor([1.0 / counts[c] if counts[c] else 0.0 for c in range(num_classes)])
        present = weights > 0
        return weights / weights[present].mean()
    if isinstance(setting, str) or len(setting) != num_classes:
        raise VolsegError(
            f"config key 'train.class_weights' has {len(setting)} weights for {num_classes} "
            "classes; give one per class, 'balanced', or null"
        )
    return torch.tensor([float(w) for w in setting])


def classification_loss(weights: Tensor | None = None) -> nn.Module:
    """Cross-entropy on grade logits ``(B, G)`` and class ids ``(B,)``, optionally weighted."""
    return nn.CrossEntropyLoss(weight=weights)
