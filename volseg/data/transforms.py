"""MONAI dictionary pipelines built from the config, and their inversion onto the input grid.

A data dict (:func:`volseg.data.loading.case_to_dict`) goes through, in order:

1. **Load** (:class:`~volseg.data.loading.LoadVolumed`, the first :data:`LOAD_STEPS` steps):
   channel-first float32 MetaTensors ``(C, X, Y, Z)`` with the RAS affine, so
   ``EnsureChannelFirstd`` is never needed; the image read is kept under ``reference``
   (header and geometry, for writing outputs on the input grid), ``label`` and ``mask`` must
   lie on its grid; ``mask`` is binarised (> 0.5).
2. **Grid**: ``Orientationd("RAS")``, then ``Spacingd`` to ``data.spacing`` (mm) when set:
   bilinear for the image, nearest for ``label``/``mask``.
3. **Intensity** (image only): CT clips ``data.ct_window`` (HU) and scales it to [0, 1]. MRI is
   z-scored over the non-zero voxels of each channel, then mapped by the fixed
   ``x = clip(0.5 + z / 8, 0, 1)`` on non-zero voxels (+-4 SD span [0, 1], the range the encoder
   expects before its own ImageNet mean/std) while background stays exactly 0. A voxel whose
   value equals the mean (z = 0, rare) is taken for background.
4. **Foreground crop**: ``CropForegroundd`` on the image (> 0, any channel; a blank image is
   kept whole) with a 3-voxel margin, clipped to the volume; inverted by zero padding.
5. **Training only, slab sampling**: ``SpatialPadd`` to at least ``data.slab`` slices, then
   :class:`RandSlabd` keeps every slice whole and takes ``data.slab`` consecutive slices along
   the slice axis. Segmentation picks a foreground slab half of the time: a class present in
   the label, uniformly (so a small organ counts as much as the liver), then a slice weighted by
   that class's area in it, and a random slab containing that slice; otherwise a uniform slab.
   Classification always takes a slab through the ``mask`` (tumour) when the case has one,
   else a uniform one.
   Validation and inference keep the whole volume.
6. **Training only, augmentation** (``data.augment``), each drawn independently:
   flips along each axis (p=0.5 each) and in-plane quarter turns (p=0.5, k in 1..3), both only
   with ``data.mirror``; ``RandAffined`` (p=0.2) rotating in-plane (about the slice axis) up to
   15 degrees and scaling in-plane by up to 10%, never across slices; intensity scale (p=0.3,
   +-10%), shift (p=0.3, +-0.1) and Gaussian noise (p=0.15, sd up to 0.03). MRI adds, before
   those, ``RandBiasFieldd`` (p=0.3), TorchIO ``RandomGhosting`` per channel (p=0.1, the
   MONAI-less k-space artefact, never on the validation path) and gamma
   ``RandAdjustContrastd`` (p=0.3, gamma 0.7-1.5).
7. Absent modalities are re-zeroed (``presence``), then ``EnsureTyped``: image float32,
   label int64, mask float32 (MetaTensors); ``presence`` float32 and ``target`` int64 tensors.

**Feature-safe augmentations.** With a frozen encoder the slice features are computed once on
the preprocessed volume (steps 1-4) and reused, so only augmentations that can be applied to
the cached feature volume ``(E, ceil(X/14), ceil(Y/14), Z)`` and to the image/label in the same
way stay valid: slab sampling (slices are encoded independently, so a slab of features is
exactly the features of the slab), flips (exact along the slice axis; in-plane an approximate
equivariance, the patch grid is mirrored with the image) and in-plane quarter turns of square
slices (a non-square turn changes the cached grid's shape and its padding side). Intensity
changes, bias field, ghosting, noise and affine resampling alter what the encoder would have
seen, so the cached features would be stale. ``build_transforms(..., for_cached_features=True)``
keeps only :data:`FEATURE_SAFE_TRANSFORMS` after step 4, applied also to ``extra_keys``, plus,
for segmentation, the intensity scale, shift and noise of step 6 on the image alone: the
segmentation heads read the image as a second input (the pyramid's full-resolution levels),
and that path is augmented while the cached features stay as the encoder saw the volume.
Without it a cached run with ``mirror: false`` saw the same volumes every epoch; with it the
organ phantoms' held-out Dice went from 0.846 to 0.851 and the abdomen's from 0.933 to 0.935
(docs/BENCHMARKS.md), small gains inside the confidence intervals.

volseg's own transforms (:class:`RandSlabd` and the others) live in
:mod:`volseg.data.map_transforms`.

**Determinism.** Call ``pipeline.set_random_state(seed)`` (or pass ``seed``); MONAI's
``DataLoader`` seeds each worker's copy. ``monai.utils.set_determinism`` alone does not reach
MONAI's per-transform random states. The TorchIO step draws its torch seed from its own state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from volseg.config.schema import DataConfig
from volseg.data.loading import REFERENCE_KEY, LoadVolumed
from volseg.data.map_transforms import (
    RandSlabd,
    SquareRandRotate90d,
    TorchioAugmentd,
    ZeroAbsentModalitiesd,
    ZScoreToUnitd,
)

SLICE_AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
SPATIAL_KEYS = ("image", "label", "mask")
INTERPOLATION = ("bilinear", "nearest", "nearest")  # per SPATIAL_KEYS entry
FOREGROUND_MARGIN = 3  # voxels kept around the foreground box
# build_transforms' first steps read the files (and binarise the mask): a pipeline run with
# ``end=LOAD_STEPS`` loads a case once, then ``start=LOAD_STEPS`` preprocesses it (ensembles).
LOAD_STEPS = 3


# Transform types kept after preprocessing when encoder features are cached.
FEATURE_SAFE_TRANSFORMS = (SpatialPadd, RandSlabd, RandFlipd, SquareRandRotate90d)


def foreground_or_all(image: torch.Tensor) -> torch.Tensor:
    """Foreground (> 0) voxels for ``CropForegroundd``; all of them if there are none.

    A blank volume then keeps its size instead of cropping to nothing.
    """
    foreground = image > 0
    return foreground if bool(foreground.any()) else torch.ones_like(foreground)


def slice_axis_index(slice_axis: str) -> int:
    """Spatial axis (RAS array order) of ``axial`` (2), ``coronal`` (1) or ``sagittal`` (0)."""
    if slice_axis not in SLICE_AXES:
        raise ValueError(f"slice_axis must be one of {sorted(SLICE_AXES)}, got {slice_axis!r}")
    return SLICE_AXES[slice_axis]


def build_transforms(
    data_cfg: DataConfig,
    *,
    task: Literal["segmentation", "classification"],
    modalities: Sequence[str],
    train: bool,
    slice_axis: str = "axial",
    for_cached_features: bool = False,
    extra_keys: Sequence[str] = (),
    seed: int | None = None,
) -> Compose:
    """The preprocessing (and, for training, sampling/augmentation) pipeline of the module doc.

    Args:
        data_cfg: spacing, intensity, window, slab and augmentation switches.
        task: ``segmentation`` (guides slabs by ``label``) or ``classification`` (by ``mask``).
        modalities: modality names; the image must load with one channel per modality.
        train: add slab sampling and augmentation; False keeps the whole volume (validation,
            inference) and the pipeline is invertible with
            :func:`~volseg.data.invert.invert_prediction`.
        slice_axis: ``axial``, ``coronal`` or ``sagittal``; slabs and quarter turns follow it.
        for_cached_features: after preprocessing keep only :data:`FEATURE_SAFE_TRANSFORMS`
            (for segmentation also the intensity scale, shift and noise of the image the head
            reads; the cached features stay as encoded).
        extra_keys: keys already in the dict on the preprocessed grid's slice axis (e.g. cached
            features ``(E, X', Y', Z)``) that follow slab sampling and flips; needs
            ``for_cached_features``.
        seed: seed the pipeline's random state (``Compose.set_random_state``).

    Returns:
        A ``Compose`` mapping a :func:`~volseg.data.loading.case_to_dict` dict to tensors:
        ``image`` float32 ``(M, X, Y, Z)``, ``label`` int64 ``(1, X, Y, Z)``, ``mask`` float32
        ``(1, X, Y, Z)`` (MetaTensors, RAS), ``presence`` float32 ``(M,)``, ``target`` int64.
    """
    axis = slice_axis_index(slice_axis)
    if extra_keys and not for_cached_features:
        raise ValueError("extra_keys are only followed with for_cached_features=True")
    keys = list(SPATIAL_KEYS)
    transforms: list[Callable] = [
        LoadVolumed("image", channels=len(modalities), reference_key=REFERENCE_KEY),
        LoadVolumed(["label", "mask"], allow_missing_keys=True, grid_of=REFERENCE_KEY),
        AsDiscreted("mask", threshold=0.5, allow_missing_keys=True),
        Orientationd(keys, axcodes="RAS", labels=None, allow_missing_keys=True),
    ]
    assert isinstance(transforms[LOAD_STEPS], Orientationd), "LOAD_STEPS must end the loading"
    if data_cfg.spacing is not None:
        pixdim = [float(s) for s in data_cfg.spacing]
        transforms.append(Spacingd(keys, pixdim, mode=INTERPOLATION, allow_missing_keys=True))
    transforms += _normalisation(data_cfg)
    transforms.append(
        CropForegroundd(
            keys,
            source_key="image",
            select_fn=foreground_or_all,
            margin=FOREGROUND_MARGIN,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
            allow_missing_keys=True,
        )
    )
    if train:
        sampled = keys + list(extra_keys)
        roi = [-1, -1, -1]
        roi[axis] = data_cfg.slab
        seg = task == "segmentation"
        transforms += [
            SpatialPadd(sampled, spatial_size=roi, allow_missing_keys=True),
            RandSlabd(
                sampled,
                data_cfg.slab,
                axis,
                guide_key="label" if seg else "mask",
                pos_fraction=0.5 if seg else 1.0,
                allow_missing_keys=True,
            ),
        ]
        if data_cfg.augment:
            transforms += _augmentations(
                data_cfg, axis, sampled, for_cached_features, image_to_head=task == "segmentation"
            )
    transforms += [
        ZeroAbsentModalitiesd("image"),
        EnsureTyped(
            keys, dtype=[torch.float32, torch.int64, torch.float32], allow_missing_keys=True
        ),
        EnsureTyped(
            ["presence", "target"],
            dtype=[torch.float32, torch.int64],
            track_meta=False,
            allow_missing_keys=True,
        ),
    ]
    pipeline = Compose(transforms)
    if seed is not None:
        pipeline.set_random_state(seed)
    return pipeline


def _normalisation(data_cfg: DataConfig) -> list[Callable]:
    if data_cfg.intensity == "ct":
        low, high = data_cfg.ct_window
        return [ScaleIntensityRanged("image", low, high, b_min=0.0, b_max=1.0, clip=True)]
    return [
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ZScoreToUnitd("image"),
    ]


def _augmentations(
    data_cfg: DataConfig, axis: int, sampled: list[str], cached: bool, *, image_to_head: bool
) -> list[Callable]:
    """Training augmentations after slab sampling.

    With ``cached`` features only the feature-safe spatial ones, plus (``image_to_head``: the
    segmentation heads read the image too) the intensity ones on the image alone.
    """
    in_plane = tuple(a for a in range(3) if a != axis)
    out: list[Callable] = []
    if data_cfg.mirror:
        out += [RandFlipd(sampled, 0.5, spatial_axis=a, allow_missing_keys=True) for a in range(3)]
        rotate90 = SquareRandRotate90d if cached else RandRotate90d
        out.append(
            rotate90(sampled, prob=0.5, max_k=3, spatial_axes=in_plane, allow_missing_keys=True)
        )
    intensity = [  # a cached sample may come without its image
        RandScaleIntensityd("image", factors=0.1, prob=0.3, allow_missing_keys=True),
        RandShiftIntensityd("image", offsets=0.1, prob=0.3, allow_missing_keys=True),
        RandGaussianNoised("image", prob=0.15, std=0.03, allow_missing_keys=True),
    ]
    if cached:
        return out + intensity if image_to_head else out
    rotate, scale = [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]
    rotate[axis], scale[axis] = float(np.deg2rad(15.0)), 0.0
    out.append(
        RandAffined(
            list(SPATIAL_KEYS),
            prob=0.2,
            rotate_range=rotate,
            scale_range=scale,
            mode=INTERPOLATION,
            padding_mode="zeros",
            allow_missing_keys=True,
        )
    )
    if data_cfg.intensity == "mri":
        import torchio  # only training MRI pipelines need it

        ghosting = torchio.RandomGhosting(num_ghosts=(2, 6), axes=in_plane, intensity=(0.2, 0.5))
        out += [
            RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.1)),
            TorchioAugmentd("image", ghosting, prob=0.1),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        ]
    return out + intensity
