"""After the network: probabilities to label values, largest components, slice maps.

Everything here works on arrays of one case and knows nothing of models or files.

A label map is made where the probabilities lie (the GPU when they were stitched there) and
only it reaches the host, one byte per voxel: :func:`input_class_index` takes the argmax on
the preprocessed grid and moves the index map back when no preprocessing step resampled (the
default: RAS orientation and a foreground crop), and otherwise takes the probabilities back a
few classes at a time, keeping a running argmax. Full probabilities on the input grid are made
only when asked for (``--save-probs``, ensembles).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from scipy import ndimage
from torch import Tensor

from volseg.data.invert import invert_prediction, voxel_map

CLASS_CHUNK = 4  # classes taken back through a resampling inverse at once


def to_label_values(index: Tensor | np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """A class index map (any device) -> label values on the host, uint8 (uint16 above 255)."""
    index = torch.as_tensor(index).cpu().numpy()
    values = np.asarray(label_values, dtype=np.int64)
    dtype = np.uint8 if values.max(initial=0) <= 255 else np.uint16
    return values.astype(dtype)[index]


def input_class_index(
    probabilities: Tensor,
    data: Mapping[Hashable, Any],
    transforms: Compose,
    key: str = "image",
    *,
    chunk: int = CLASS_CHUNK,
) -> Tensor:
    """The argmax class of every input voxel, computed on the probabilities' device.

    Gives what :func:`~volseg.data.invert.invert_prediction` of the probabilities, background
    set to 1 minus the others where the crop removed voxels, then an argmax would give,
    without making the ``K`` input-sized volumes:

    - no resampling step (:func:`~volseg.data.invert.voxel_map`): argmax on the preprocessed
      grid, and the index map moved back (cropped voxels are class 0);
    - otherwise: the probabilities go back ``chunk`` classes at a time (linear interpolation,
      as recorded); a running maximum over classes ``1..K-1`` and the running sum decide
      against the background, which wins ties, as ``argmax`` picks the first maximum.

    Args:
        probabilities: ``(K, X', Y', Z')`` on the grid of ``data[key]``; class 0 is background.
        data: the preprocessed (validation pipeline) dict.
        transforms: that pipeline.
        key: the key whose recorded steps are undone.
        chunk: classes inverted at once in the resampling case (memory vs. calls).

    Returns:
        ``(X, Y, Z)`` uint8 (int32 beyond 256 classes) class indices on the input grid, on the
        device of ``probabilities``.
    """
    k = int(probabilities.shape[0])
    dtype = torch.uint8 if k <= 256 else torch.int32
    moves = voxel_map(data[key])
    if moves is not None:
        return moves.to_input(probabilities.argmax(dim=0, keepdim=True).to(dtype))[0]

    def back(first: int, last: int) -> Tensor:
        part = invert_prediction(probabilities[first:last], data, transforms, key, nearest=False)
        return part.as_tensor()

    background = back(0, 1)[0]
    total = background.clone()
    best = index = None
    for first in range(1, k, max(int(chunk), 1)):
        part = back(first, min(first + chunk, k))
        total += part.sum(dim=0)
        value, arg = part.max(dim=0)
        arg = (arg + first).to(dtype)
        if best is None:
            best, index = value, arg
        else:  # an earlier class wins a tie, as in argmax
            better = value > best
            best, index = torch.where(better, value, best), torch.where(better, arg, index)
    if best is None:  # one class only
        return torch.zeros(background.shape, dtype=dtype, device=background.device)
    background += (1 - total).clamp_min(0)
    return torch.where(best > background, index, torch.zeros_like(index))


def keep_largest_component(labels: np.ndarray, *, background: int = 0) -> np.ndarray:
    """Per label value, keep only its largest connected component; the rest becomes background.

    Components are 26-connected (faces, edges and corners), as MONAI's
    ``KeepLargestConnectedComponent`` uses by default; a tie keeps the component met first in
    C order.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        background: value left alone and written where components are removed.

    Returns:
        A new label map of the same dtype.
    """
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(3, 3)
    for value in np.unique(out):
        if value == background:
            continue
        mask = out == value
        components, count = ndimage.label(mask, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[mask & (components != int(np.argmax(sizes)))] = background
    return out


def original_slice_indices(
    indices: Sequence[int],
    *,
    affine: np.ndarray,
    original_affine: np.ndarray,
    spatial_shape: Sequence[int],
    original_shape: Sequence[int],
    slice_axis: int,
) -> tuple[list[int], int]:
    """Map slice indices of a preprocessed volume to slice indices of the input file.

    The preprocessed slice ``k`` is located by the world position of its in-plane centre
    (``affine``, RAS mm); that point is mapped into the input's voxel grid
    (``original_affine``) and read along the input axis closest to the preprocessed slice
    direction (for an input stored axially that is its third axis; a sagittal or coronal
    acquisition gives the axis it was sliced along).

    Args:
        indices: slice indices along ``slice_axis`` of the preprocessed volume.
        affine: 4x4 voxel-to-RAS affine of the preprocessed volume.
        original_affine: 4x4 voxel-to-RAS affine of the input file.
        spatial_shape: ``(X, Y, Z)`` of the preprocessed volume.
        original_shape: ``(X, Y, Z)`` of the input.
        slice_axis: axis (0..2) of the preprocessed volume the slices stack along.

    Returns:
        ``(input indices rounded and clipped to the input, input axis they count along)``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    to_input = np.linalg.inv(np.asarray(original_affine, dtype=np.float64)) @ affine
    normal = to_input[:3, slice_axis]  # input voxels moved per preprocessed slice step
    axis = int(np.argmax(np.abs(normal)))
    centre = (np.asarray(spatial_shape, dtype=np.float64) - 1) / 2
    out = []
    for k in indices:
        point = centre.copy()
        point[slice_axis] = float(k)
        position = to_input[:3, :3] @ point + to_input[:3, 3]
        out.append(int(np.clip(np.rint(position[axis]), 0, original_shape[axis] - 1)))
    return out, axis
