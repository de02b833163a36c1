"""Sliding-window segmentation that runs the encoder once per slice.

The expensive part of a volseg model is the 2D encoder; the 3D head is light. Windows here are
*slabs*: every window holds whole slices in-plane and ``roi_slices`` consecutive slices along
the model's slice axis, which is the shape the head was trained on (``data.slab``).

Cached mode (the default):

1. ``features = model.encode(image)`` once for the whole volume; the encoder itself walks the
   slices in chunks of ``model.encoder.chunk`` (the memory knob).
2. MONAI's :func:`~monai.inferers.sliding_window_inference` slides over an *index tensor*
   ``(1, 1, ...)`` that has the volume's length along the slice axis and length 1 in-plane.
   With ``with_coord=True`` the predictor receives each window's slice range and cuts the
   *same* slices from the feature volume (in-plane ``ceil(X/14)``) and from the image (in-plane
   ``X``): both keep full resolution along the slice axis, so the crops are aligned exactly.
   The predictor returns ``(n, K, X, Y, roi_slices)`` logits; MONAI stitches outputs whose size
   differs from the input window (its zoom between input and output windows), here an exact
   integer zoom of ``X / 1`` in-plane and 1 along the slices.
3. Windows are blended by a weight map along the slice axis only (Gaussian or constant). A
   weight in-plane would cancel anyway: every window covers the same in-plane positions.

Naive mode (``naive=True``, for comparison): the same windows over the image, the whole model
(encoder + head) per window. Slices are encoded independently, so a window's features are
exactly the features of its slices, and both modes compute the same function (equal to float
rounding; tests check 1e-5). Naive mode re-encodes every slice ``1 / (1 - overlap)`` times.

In-plane windowing over the feature grid for very large slices is not implemented: DINOv2
attends across the whole slice, so the encoder must see whole slices anyway, and the head's
cost per slab is linear in the in-plane size.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from volseg.errors import VolsegError
from volseg.models.slicing import slice_dim
from volseg.runtime import Precision, resolve_precision

BLEND_MODES = ("gaussian", "constant")
SIGMA_SCALE = 0.125  # MONAI's default: Gaussian sigma = 0.125 x window length


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def sliding_window_logits(
    model: nn.Module,
    image: Tensor,
    *,
    roi_slices: int | None,
    overlap: float,
    sw_batch_size: int,
    mode: str = "gaussian",
    naive: bool = False,
    stitch_device: torch.device | str | None = None,
    amp: str | Precision = "auto",
    features: Tensor | None = None,
) -> Tensor:
    """Segmentation logits of a whole volume from slab windows (see the module docstring).

    Args:
        model: a :class:`~volseg.models.SegmentationModel` (or a DDP wrapper of one); it should
            be in eval mode. Inputs are moved to its device.
        image: ``(1, C, X, Y, Z)`` preprocessed volume (intensities in [0, 1]).
        roi_slices: slices per window along the slice axis; None (or more than the volume
            has) puts the whole volume in one window.
        overlap: fraction of a window shared with the next one, in [0, 1).
        sw_batch_size: windows run through the head (naive: the model) at once.
        mode: blending of overlapping windows, ``gaussian`` or ``constant``.
        naive: run the whole model per window instead of encoding once.
        stitch_device: where the stitched logits (and MONAI's count map) live, e.g. ``"cpu"``
            to keep a large volume's output in host memory; default the model's device.
        amp: ``auto``, ``bf16``, ``fp16`` or ``off`` (:func:`volseg.runtime.resolve_precision`),
            or a :class:`~volseg.runtime.Precision` already resolved.
        features: the encoder's features of ``image`` ``(1, E, x, y, z)``, if already
            computed (cached mode only); computed here otherwise.

    Returns:
        float32 logits ``(1, K, X, Y, Z)`` on ``stitch_device``.

    Raises:
        VolsegError: bad ``overlap``, ``sw_batch_size``, ``roi_slices``, ``mode`` or ``amp``.
        ValueError: ``image`` is not ``(1, C, X, Y, Z)``.
    """
    net = getattr(model, "module", model)
    _check_options(roi_slices, overlap, sw_batch_size, mode)
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, X, Y, Z), got {tuple(image.shape)}")
    device = model_device(net)
    out_device = torch.device(stitch_device) if stitch_device is not None else device
    dim = slice_dim(net.encoder.slice_axis)
    n = int(image.shape[2 + dim])
    roi = n if roi_slices is None else min(int(roi_slices), n)
    overlaps = tuple(float(overlap) if d == dim else 0.0 for d in range(3))
    weights = slab_weights(roi, dim, mode, device)
    image = image.to(device)
    precision = resolve_precision(amp, device, option="amp")
    with torch.no_grad(), precision.autocast():
        if naive:
            roi_size = [-1, -1, -1]
            roi_size[dim] = roi
            return sliding_window_inference(
                image.float(),
                roi_size,
                sw_batch_size,
                lambda window: net(window).float(),
                overlap=overlaps,
                mode=mode,
                roi_weight_map=weights,
                sw_device=device,
                device=out_device,
            )
        if features is None:
            features = net.encode(image)
        features = features.to(device)
        if precision.dtype is None:
            features = features.float()  # e.g. an fp16 feature cache decoded in float32
        index_shape = [1, 1, 1, 1, 1]
        index_shape[2 + dim] = n
        index = torch.zeros(index_shape, dtype=torch.float32, device=device)
        roi_size = [1, 1, 1]
        roi_size[dim] = roi
        return sliding_window_inference(
            index,
            roi_size,
            sw_batch_size,
            _slab_predictor(net, features, image, dim),
            overlap=overlaps,
            mode=mode,
            roi_weight_map=weights,
            sw_device=device,
            device=out_device,
            with_coord=True,
        )


def _slab_predictor(
    model: nn.Module, features: Tensor, image: Tensor, dim: int
) -> Callable[[Tensor, Sequence[Sequence[slice]]], Tensor]:
    """Predictor for the index-tensor windows: decode the windows' feature and image slabs."""

    def predict(_window: Tensor, coords: Sequence[Sequence[slice]]) -> Tensor:
        crops = []
        for coord in coords:  # coord = [batch, channel, sx, sy, sz] on the index tensor
            crop: list[slice] = [slice(None)] * 5
            crop[2 + dim] = coord[2 + dim]
            crops.append(tuple(crop))
        slab_features = torch.cat([features[c] for c in crops])
        slab_image = torch.cat([image[c] for c in crops])
        return model.decode(slab_features, slab_image).float()

    return predict


def slab_weights(roi: int, dim: int, mode: str, device: torch.device | str) -> Tensor:
    """Blending weights of one window, varying along the slice axis only.

    Returns:
        float32 ``(1, 1, roi)`` (``roi`` at position ``dim``) that broadcasts over the window:
        MONAI's Gaussian (sigma ``0.125 * roi``, minimum clamped above 0) or ones.
    """
    line = compute_importance_map((roi,), mode=mode, sigma_scale=SIGMA_SCALE, device=device)
    shape = [1, 1, 1]
    shape[dim] = roi
    return line.to(torch.float32).reshape(shape)


def _check_options(roi_slices: int | None, overlap: float, sw_batch_size: int, mode: str) -> None:
    if roi_slices is not None and roi_slices < 1:
        raise VolsegError(f"roi_slices must be >= 1 or None (whole volume), got {roi_slices}")
    if not 0.0 <= overlap < 1.0:
        raise VolsegError(f"overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise VolsegError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    if mode not in BLEND_MODES:
        raise VolsegError(f"blend mode {mode!r} is not one of {', '.join(BLEND_MODES)}")


def segment_probabilities(
    model: nn.Module,
    image: Tensor,
    *,
    roi_slices: int | None,
    overlap: float,
    sw_batch_size: int,
    tta: bool = False,
    mode: str = "gaussian",
    naive: bool = False,
    stitch_device: torch.device | str | None = None,
    amp: str | Precision = "auto",
    timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> Tensor:
    """Softmax probabilities of a preprocessed volume, with mirror TTA if ``tta``.

    With TTA the 8 flips (each subset of the three axes) are grouped by their in-plane part:
    the encoder runs once per in-plane flip (4 times) and the slice-axis flip reuses those
    features flipped (slices are encoded independently, so that is exact). The probabilities
    of all 8 are flipped back and averaged, which makes the result exactly flip-equivariant
    when the windows are placed symmetrically. In naive mode every flip runs the whole model.

    Args:
        model: segmentation model in eval mode.
        image: ``(1, C, X, Y, Z)`` preprocessed volume.
        roi_slices, overlap, sw_batch_size, mode, naive, stitch_device, amp: as for
            :func:`sliding_window_logits`.
        tta: average over the 8 mirror flips.
        timer: ``timer(step)`` is a context manager that times ``encode`` and ``head``
            (naive mode: everything under ``head``); e.g. a
            :class:`~volseg.inference.predict.StepTimer`.

    Returns:
        float32 ``(1, K, X, Y, Z)`` probabilities on ``stitch_device`` (default the model's).
    """

    def untimed(_step: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    timer = timer or untimed
    net = getattr(model, "module", model)
    device = model_device(net)
    precision = resolve_precision(amp, device, option="amp")
    dim = slice_dim(net.encoder.slice_axis)
    window = dict(
        roi_slices=roi_slices,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        mode=mode,
        naive=naive,
        stitch_device=stitch_device,
        amp=amp,
    )
    in_plane = [a for a in range(3) if a != dim]
    flips = _flip_sets(in_plane) if tta else [((), False)]
    total: Tensor | None = None
    features: Tensor | None = None
    for axes, slice_flip in flips:
        flipped = _flip(image, axes)
        if not naive and not slice_flip:
            with timer("encode"), torch.no_grad(), precision.autocast():
                features = net.encode(flipped.to(device))
        along = [dim] if slice_flip else []
        with timer("head"):
            logits = sliding_window_logits(
                net,
                _flip(flipped, along),
                features=None if naive else _flip(features, along),
                **window,
            )
            probs = _flip(torch.softmax(logits, dim=1), [*axes, *along])
            total = probs if total is None else total.add_(probs)
    assert total is not None
    return total.div_(len(flips)) if len(flips) > 1 else total


def _flip_sets(in_plane: Sequence[int]) -> list[tuple[tuple[int, ...], bool]]:
    """``(in-plane axes flipped, slice axis flipped)`` for all 8 flips, identity first; the
    slice flip of each in-plane group directly follows it, so its features can be reused."""
    sets = []
    for k in range(len(in_plane) + 1):
        for axes in itertools.combinations(in_plane, k):
            sets += [(tuple(axes), False), (tuple(axes), True)]
    return sets


def _flip(x: Tensor | None, axes: Sequence[int]) -> Tensor | None:
    """Flip a ``(B, C, X, Y, Z)`` tensor along spatial ``axes`` (0..2); a no-op for none."""
    return x.flip([2 + a for a in axes]) if x is not None and axes else x
