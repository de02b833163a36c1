"""Grading head ``size``: the no-encoder grading baseline, the tumour's volume alone.

It reads nothing but the ``mask``: ``log(1 + voxels)`` of the tumour on the preprocessed grid,
standardised, one linear layer to grade logits (a logistic regression on log volume). With a
common ``data.spacing`` (which the config requires for this head) the voxel count is the volume
in mm³ up to a constant factor, which the standardisation removes. It is the row a grading
benchmark needs beside the encoder rows: what an encoder adds over the lesion's size. On the
held-out glioma generator the size alone scored AUC 0.84-0.88, at or above every frozen-encoder
head (docs/BENCHMARKS.md, issue 22).

Use it with the identity encoder, so no ViT runs::

    model.encoder.name=none model.head.name=size data.spacing=[1.0,1.0,2.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from volseg.errors import VolsegError
from volseg.models.cls_head import GradeOutput, check_modalities, modalities_in_use
from volseg.models.registry import HEADS
from volseg.models.slicing import slice_dim
from volseg.models.volume import LogVolume


@HEADS.register("size")
class SizeHead(nn.Module):
    """Patient grade from the tumour mask's log volume (no image features).

    ``slice_attention`` is each slice's share of the tumour's voxels (the same for every
    modality), ``modality_attention`` an equal share of each present modality: the modalities
    only have to exist, the mask is shared.

    Args:
        in_channels: width of the features (unused: the head reads only the mask).
        num_classes: number of grades ``G``.
        modalities: every modality the head may see, in the manifest's order.
        dropout, modality_dropout: accepted for the common grading-head signature; the single
            input feature is never dropped.
        slice_axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        patch_size, input_size: unused (the mask is counted at image resolution).

    Raises:
        VolsegError: no modalities or a repeated one.
    """

    reads_features = False  # the engine may cache its inputs even over the identity encoder

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        modalities: Sequence[str],
        dropout: float = 0.0,
        modality_dropout: float = 0.25,
        slice_axis: str = "axial",
        patch_size: int = 1,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        del in_channels, dropout, patch_size, input_size  # the mask is all it reads
        check_modalities(modalities, modality_dropout)
        self.modalities = tuple(modalities)
        self.slice_dim = slice_dim(slice_axis)
        self.volume = LogVolume()
        self.classify = nn.Linear(1, num_classes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints written before LogVolume held the moments as this head's own buffers.
        for name in ("seen", "mean", "squares"):
            if prefix + name in state_dict:
                state_dict[prefix + "volume." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor | None = None,
        present: Tensor | None = None,
    ) -> GradeOutput:
        """Grade a batch of patients (arguments as :meth:`ClsHead.forward`; only the modalities'
        presence is read from ``features``).

        Raises:
            VolsegError: no mask, or a modality the head does not know.
            ValueError: no modality given, or a sample with none present.
        """
        valid = modalities_in_use(features, self.modalities, present)
        if mask is None:
            raise VolsegError(
                "model.head.name=size grades from the tumour mask alone: give every case a "
                "mask (manifest key 'mask', or --mask for volseg predict)"
            )
        z = self.volume(mask)
        plane = tuple(2 + d for d in range(3) if d != self.slice_dim)
        per_slice = mask.float().sum(dim=plane)[:, 0]  # (B, Z)
        per_slice = per_slice / per_slice.sum(1, keepdim=True).clamp_min(1e-6)
        slice_attention = {name: per_slice for name in features}
        share = valid.float() / valid.sum(1, keepdim=True)
        return GradeOutput(self.classify(z), slice_attention, share, z)
