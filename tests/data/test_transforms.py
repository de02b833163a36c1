"""MONAI pipelines from the config: loading, grid, intensity, slabs, augmentation, inversion."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import (
    CropForegroundd,
    RandGaussianNoised,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from tests.conftest import rotation
from volseg.config.schema import DataConfig
from volseg.data import Case, ImageSource
from volseg.data.invert import invert_prediction
from volseg.data.loading import LoadVolumed, case_to_dict, load_volume, reference_geometry
from volseg.data.transforms import (
    FEATURE_SAFE_TRANSFORMS,
    RandSlabd,
    SquareRandRotate90d,
    TorchioAugmentd,
    ZeroAbsentModalitiesd,
    build_transforms,
)
from volseg.errors import VolsegError
from volseg.io import Geometry, Image, read_image, write_image, write_like
from volseg.synth import MODALITIES, grade_classes, make_glioma_case, make_organ_case

SPACING = (1.0, 1.0, 2.5)  # mm, coarser than the phantom in-plane, finer across slices


def restored(image: Image, perm: tuple[int, int, int], flips: tuple[bool, ...], tilt) -> Image:
    """The same voxels stored in another axis order and direction, on a tilted (oblique) grid."""
    array = np.flip(np.transpose(image.array, perm), [a for a in range(3) if flips[a]]).copy()
    signs = np.where(flips, -1.0, 1.0)
    direction = tilt @ image.direction[:, perm] * signs[None, :]
    corner = np.array([(image.shape[p] - 1) if f else 0 for p, f in zip(perm, flips, strict=True)])
    first = np.zeros(3)
    first[list(perm)] = corner
    origin = image.geometry.index_to_physical(first)
    spacing = image.spacing[list(perm)]
    return Image(array, Geometry(array.shape, spacing, origin, direction))


@pytest.fixture(scope="module", params=["synth", "oblique"])
def organ(request, tmp_path_factory) -> tuple[Case, Image, Image]:
    """CT phantom + label: as drawn (flipped, anisotropic) and re-stored oblique/permuted."""
    image, label, _ = make_organ_case(np.random.default_rng(0), (48, 40, 12))
    if request.param == "oblique":
        tilt = rotation(8, -6, 11)
        image = restored(image, (1, 0, 2), (True, False, True), tilt)
        label = restored(label, (1, 0, 2), (True, False, True), tilt)
        assert image.geometry.orientation not in ("RAS", "LPS")
    folder = tmp_path_factory.mktemp(f"organ_{request.param}")
    write_image(image, folder / "ct.nii.gz")
    write_image(label, folder / "seg.nii.gz", label=True)
    case = Case("organ", {"CT": ImageSource(folder / "ct.nii.gz")}, label=folder / "seg.nii.gz")
    return case, read_image(folder / "ct.nii.gz"), read_image(folder / "seg.nii.gz")


@pytest.fixture(scope="module")
def glioma(tmp_path_factory) -> tuple[Case, Image]:
    """4-channel MSD-style file for T1/T1ce, a separate T2 file, FLAIR missing; tumour mask."""
    image, label, _ = make_glioma_case(np.random.default_rng(1), (24, 24, 16), 1, grades=2)
    folder = tmp_path_factory.mktemp("glioma")
    write_image(image, folder / "brain.nii.gz")
    write_image(image.channel(2), folder / "t2.nii.gz")
    write_image(label, folder / "tumour.nii.gz", label=True)
    images = {
        "T1": ImageSource(folder / "brain.nii.gz", 0),
        "T1ce": ImageSource(folder / "brain.nii.gz", 1),
        "T2": ImageSource(folder / "t2.nii.gz"),
    }
    case = Case("brain", images, target="grade3", mask=folder / "tumour.nii.gz")
    return case, read_image(folder / "brain.nii.gz")


def ct_pipeline(train: bool, **cfg) -> object:
    return build_transforms(DataConfig(**cfg), task="segmentation", modalities=["CT"], train=train)


def mri_pipeline(train: bool, **cfg) -> object:
    cfg = {"intensity": "mri", **cfg}
    return build_transforms(
        DataConfig(**cfg), task="classification", modalities=MODALITIES, train=train
    )


def mri_dict(case: Case) -> dict:
    return case_to_dict(case, MODALITIES, classes=grade_classes(2))


# ------------------------------------------------------------------------------------ loading


def test_load_volume_keeps_geometry_and_source(organ) -> None:
    case, image, _ = organ
    volume = load_volume(case.images["CT"])
    assert isinstance(volume, MetaTensor) and volume.dtype == torch.float32
    assert volume.shape == (1, *image.shape)
    np.testing.assert_array_equal(volume[0].numpy(), image.array)
    np.testing.assert_allclose(volume.affine.numpy(), image.affine, atol=1e-6)
    assert volume.meta["filename_or_obj"] == str(case.images["CT"].path)
    assert reference_geometry(volume).matches(image.geometry)


def test_case_dict_stacks_modalities_and_zero_fills_missing(glioma) -> None:
    case, image = glioma
    data = mri_dict(case)
    assert data["target"] == 1 and data["presence"].tolist() == [1, 1, 1, 0]
    volume = LoadVolumed("image", channels=4)(data)["image"]
    assert volume.shape == (4, *image.shape)
    np.testing.assert_array_equal(volume[:3].numpy(), image.array[:3])
    assert not volume[3].any()


def test_load_errors_name_the_file(glioma, tmp_path: Path) -> None:
    case, _ = glioma
    with pytest.raises(VolsegError, match="missing.nii.gz"):
        load_volume(tmp_path / "missing.nii.gz")
    with pytest.raises(VolsegError, match="no channel 7"):
        load_volume([ImageSource(case.images["T1"].path, 7)])
    with pytest.raises(VolsegError, match="holds 4 channels"):
        load_volume([case.images["T1"].path])
    with pytest.raises(VolsegError, match="expected 3"):
        load_volume(case.images["T1"].path, channels=3)
    with pytest.raises(VolsegError, match="grade9"):
        case_to_dict(Case("x", case.images, target="grade9"), MODALITIES, classes=["a"])


# ------------------------------------------------------------------------- validation pipelines


def test_ct_validation_grid_and_intensity(organ) -> None:
    case, image, _ = organ
    out = ct_pipeline(False, spacing=SPACING)(case_to_dict(case, ["CT"]))
    volume, label = out["image"], out["label"]
    assert volume.dtype == torch.float32 and label.dtype == torch.int64
    assert volume.shape[0] == 1 and label.shape == volume.shape
    assert nib.aff2axcodes(volume.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(affine_to_spacing(volume.affine), SPACING, atol=1e-5)
    assert volume.min() == 0 and volume.max() == 1  # air below, bone above the window
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4}


def test_blank_volume_is_not_cropped_away(tmp_path: Path) -> None:
    geometry = Geometry((6, 5, 4), (0.7, 0.7, 3.0), (10.0, -4.0, 2.0), rotation(0, 0, 20))
    write_image(Image(np.full(geometry.shape, -1000, np.int16), geometry), tmp_path / "air.nrrd")
    data = {"image": [ImageSource(tmp_path / "air.nrrd")]}
    out = ct_pipeline(False)(data)
    assert out["image"].shape == (1, 6, 5, 4) and not out["image"].any()


def test_ct_window_values_exact_on_input_grid(organ) -> None:
    case, image, _ = organ
    pipeline = ct_pipeline(False)
    out = pipeline(case_to_dict(case, ["CT"]))
    back = invert_prediction(out["image"], out, pipeline, nearest=True)
    low, high = DataConfig().ct_window
    expected = np.clip((image.array.astype(np.float32) - low) / (high - low), 0, 1)
    np.testing.assert_allclose(back[0].numpy(), expected, atol=1e-6)


def test_mri_zscore_mapping_keeps_background_zero(glioma) -> None:
    case, image = glioma
    pipeline = mri_pipeline(False)
    out = pipeline(mri_dict(case))
    back = invert_prediction(out["image"], out, pipeline, nearest=True).numpy()
    for c in range(3):
        raw = image.array[c].astype(np.float64)
        nz = raw != 0
        z = (raw - raw[nz].mean()) / raw[nz].std()
        expected = np.where(nz, np.clip(0.5 + z / 8, 0, 1), 0)
        np.testing.assert_allclose(back[c], expected, atol=1e-5)
    assert not back[3].any()
    assert out["presence"].dtype == torch.float32 and out["target"].dtype == torch.int64
    assert out["mask"].dtype == torch.float32 and set(out["mask"].unique().tolist()) == {0, 1}


# ---------------------------------------------------------------------------- training samples


@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_train_slab_keeps_whole_slices(organ, slice_axis: str) -> None:
    case, _, _ = organ
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[slice_axis]
    data = case_to_dict(case, ["CT"])
    full = ct_pipeline(False, spacing=SPACING)(data)["image"].shape[1:]
    cfg = DataConfig(spacing=SPACING, slab=5)
    pipeline = build_transforms(
        cfg, task="segmentation", modalities=["CT"], train=True, slice_axis=slice_axis, seed=3
    )
    for _ in range(3):
        out = pipeline(data)
        shape = out["image"].shape[1:]
        assert out["label"].shape == out["image"].shape and out["label"].dtype == torch.int64
        assert shape[axis] == 5
        in_plane = [a for a in range(3) if a != axis]
        assert sorted(shape[a] for a in in_plane) == sorted(full[a] for a in in_plane)


def test_slab_pads_short_volumes(organ) -> None:
    case, image, _ = organ
    out = ct_pipeline(True, slab=20, augment=False)(case_to_dict(case, ["CT"]))
    assert out["image"].shape[3] == 20 > min(image.shape)


def test_slab_sampler_finds_small_foreground() -> None:
    label = torch.zeros(1, 6, 5, 40)
    label[0, 2, 2, 30] = 3  # one voxel of a tiny organ
    label[0, :, :, 5:9] = 1  # a big one elsewhere
    sampler = RandSlabd(["label"], slab=4, axis=2, guide_key="label", pos_fraction=1.0)
    sampler.set_random_state(0)
    starts = []
    for _ in range(200):
        assert sampler({"label": label})["label"].shape == (1, 6, 5, 4)
        starts.append(sampler.start_stop[0])
    hits_small = np.mean([s <= 30 < s + 4 for s in starts])
    assert 0.3 < hits_small < 0.7  # the tiny class is drawn as often as the big one
    assert all(s <= 30 < s + 4 or (s < 9 and s + 4 > 5) for s in starts)
    uniform = RandSlabd(["label"], slab=4, axis=2)
    uniform.set_random_state(0)
    starts = set()
    for _ in range(300):
        uniform({"label": label})
        starts.add(uniform.start_stop[0])
    assert starts == set(range(37))  # every start, ignoring the label


def test_mri_grading_training_sample(glioma) -> None:
    case, image = glioma
    out = mri_pipeline(True, slab=6, spacing=(1.2, 1.2, 1.2))(mri_dict(case))
    volume = out["image"]
    assert volume.shape[0] == 4 and volume.shape[3] == 6 and volume.dtype == torch.float32
    assert not volume[3].any()  # the missing modality stays zero through augmentation
    assert out["presence"].tolist() == [1, 1, 1, 0] and out["target"].item() == 1
    assert out["mask"].shape[1:] == volume.shape[1:] and out["mask"].sum() > 0  # tumour slab


def test_seeded_pipelines_repeat(glioma) -> None:
    case, _ = glioma
    data = mri_dict(case)

    def run(seed: int) -> list[torch.Tensor]:
        pipeline = mri_pipeline(True, slab=6)
        pipeline.set_random_state(seed)
        return [pipeline(data)["image"].as_tensor() for _ in range(4)]

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other, strict=True)
    )


def test_torchio_step_is_seeded_and_keeps_meta() -> None:
    import torchio

    image = MetaTensor(torch.rand(2, 12, 12, 6), affine=torch.diag(torch.tensor([2.0, 2, 3, 1])))
    image[1] = 0
    step = TorchioAugmentd("image", torchio.RandomGhosting(intensity=(0.5, 1.0)), prob=1.0)
    results = []
    for _ in range(2):
        step.set_random_state(11)
        results.append(step({"image": image})["image"])
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], image)
    assert isinstance(results[0], MetaTensor) and torch.equal(results[0].affine, image.affine)
    assert not results[0][1].any()


def test_zero_absent_modalities() -> None:
    image = torch.ones(3, 2, 2, 2)
    out = ZeroAbsentModalitiesd("image")({"image": image, "presence": np.array([1, 0, 1.0])})
    assert out["image"].sum(dim=(1, 2, 3)).tolist() == [8, 0, 8]


# ------------------------------------------------------------------------------ cached features


def test_cached_features_keep_only_safe_transforms(organ) -> None:
    case, _, _ = organ
    cfg = DataConfig(spacing=SPACING, slab=4)
    pipeline = build_transforms(
        cfg,
        task="segmentation",
        modalities=["CT"],
        train=True,
        for_cached_features=True,
        extra_keys=["features", "stem"],
        seed=1,
    )
    names = [type(t) for t in pipeline.transforms]
    start = names.index(CropForegroundd) + 1
    after = pipeline.transforms[start:]
    random = [t for t in after if isinstance(t, Randomizable)]
    spatial = [t for t in random if isinstance(t, FEATURE_SAFE_TRANSFORMS)]
    image_only = [t for t in random if not isinstance(t, FEATURE_SAFE_TRANSFORMS)]
    assert spatial and image_only  # segmentation: the head's image input is augmented too
    assert all(list(t.keys) == ["image"] for t in image_only)
    assert {type(t) for t in image_only} == {
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandGaussianNoised,
    }
    assert all(isinstance(t, FEATURE_SAFE_TRANSFORMS) for t in after[: len(after) - 6])

    data = case_to_dict(case, ["CT"])
    grid = ct_pipeline(False, spacing=SPACING)(data)["image"].shape[1:]
    depth = torch.arange(grid[2], dtype=torch.float32)
    features = depth.expand(2, -(-grid[0] // 14), -(-grid[1] // 14), grid[2]).clone()
    stem = depth.expand(1, *grid).clone()
    for _ in range(5):
        out = pipeline({**data, "features": features, "stem": stem})
        assert out["features"].shape[-1] == out["image"].shape[-1] == 4
        np.testing.assert_array_equal(  # the same slices, in the same (maybe flipped) order
            np.asarray(out["features"][0, 0, 0]), np.asarray(out["stem"][0, 0, 0])
        )
    with pytest.raises(ValueError, match="for_cached_features"):
        build_transforms(cfg, task="segmentation", modalities=["CT"], train=True, extra_keys=["f"])


def test_square_rotation_only_turns_square_slices() -> None:
    turn = SquareRandRotate90d("x", prob=1.0, spatial_axes=(0, 1))
    square, oblong = torch.rand(1, 4, 4, 2), torch.rand(1, 4, 5, 2)
    assert not torch.equal(turn({"x": square})["x"].as_tensor(), square)
    assert torch.equal(turn({"x": oblong})["x"].as_tensor(), oblong)


# ----------------------------------------------------------------------------------- inversion


@pytest.mark.parametrize("spacing", [None, SPACING])
def test_inverted_label_lands_on_input_grid(organ, spacing, tmp_path: Path) -> None:
    case, image, label = organ
    pipeline = ct_pipeline(False, spacing=spacing)
    out = pipeline(case_to_dict(case, ["CT"]))
    assert out["image"].shape[1:] != image.shape
    back = invert_prediction(out["label"], out, pipeline)
    assert back.shape == (1, *image.shape) and back.dtype == torch.int64
    agree = np.mean(back[0].numpy() == label.array)
    if spacing is None:
        assert agree == 1.0
    else:
        assert agree >= 0.99
    np.testing.assert_allclose(back.affine.numpy(), image.affine, atol=1e-5)

    written = write_like(back[0].numpy(), image, tmp_path / "pred.nii.gz", label=True)
    reread = read_image(written)
    assert reread.geometry.matches(image.geometry)
    assert reference_geometry(out["image"]).matches(image.geometry)
    np.testing.assert_array_equal(reread.array, back[0].numpy())


def test_inverted_probabilities_resample_linearly(organ) -> None:
    case, image, label = organ
    pipeline = ct_pipeline(False, spacing=SPACING)
    out = pipeline(case_to_dict(case, ["CT"]))
    onehot = torch.nn.functional.one_hot(out["label"][0].as_tensor(), 5).permute(3, 0, 1, 2)
    back = invert_prediction(onehot.float(), out, pipeline)
    assert back.shape == (5, *image.shape) and back.dtype == torch.float32
    values = back.numpy()
    assert ((values > 0.01) & (values < 0.99)).any()  # interpolated, not nearest
    assert np.mean(values.argmax(0) == label.array) >= 0.99


def test_cached_grading_pipeline_leaves_the_image_alone() -> None:
    """Grading heads read only the features, so a cached pipeline adds no image augmentation."""
    pipeline = build_transforms(
        DataConfig(slab=4, intensity="mri"),
        task="classification",
        modalities=["T1", "FLAIR"],
        train=True,
        for_cached_features=True,
        extra_keys=["features"],
        seed=1,
    )
    names = [type(t) for t in pipeline.transforms]
    after = pipeline.transforms[names.index(CropForegroundd) + 1 :]
    assert all(isinstance(t, FEATURE_SAFE_TRANSFORMS) for t in after if isinstance(t, Randomizable))
