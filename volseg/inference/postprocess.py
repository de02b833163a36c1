"""After the network: probabilities to label values, largest components, slice maps.

Everything here works on arrays of one case and knows nothing of models or files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor


def class_labels(probabilities: Tensor | np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Argmax over classes, mapped to the label value each class is written as.

    Args:
        probabilities: ``(K, X, Y, Z)`` probabilities or logits.
        label_values: label value of class ``i`` (:func:`volseg.models.checkpoint.label_values`).

    Returns:
        ``(X, Y, Z)`` uint8 (uint16 if a value exceeds 255) label map.
    """
    index = torch.as_tensor(probabilities).argmax(dim=0).numpy()
    values = np.asarray(label_values, dtype=np.int64)
    dtype = np.uint8 if values.max(initial=0) <= 255 else np.uint16
    return values.astype(dtype)[index]


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
