from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.data.test_formats import (
    AFFINE,
    CSV_TEXT,
    SHAPE,
    make_csv,
    make_msd_brain,
    make_msd_spleen,
    make_nnunet,
)
from volseg.data import (
    Case,
    ImageSource,
    Manifest,
    ManifestError,
    check_manifest,
    load_manifest,
    validate_manifest,
)


def volume(
    path: Path,
    shape: tuple[int, ...] = SHAPE,
    affine: np.ndarray = AFFINE,
    values: tuple[float, ...] = (0, 1),
    dtype: type = np.int16,
) -> Path:
    """A volume holding ``values`` (the first as background) on a given grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full(shape, values[0], dtype=dtype)
    for i, value in enumerate(values[1:]):
        array[i, 1, 1, ...] = value
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def shifted(dx: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    """AFFINE moved by ``dx`` mm and with its slice spacing multiplied by ``stretch``."""
    affine = AFFINE.copy()
    affine[0, 3] += dx
    affine[:3, 2] *= stretch
    return affine


def defective_segmentation(root: Path) -> Manifest:
    """One case per defect, plus a good one; every defect must be reported in one run."""

    def case(case_id: str, ct=None, pet=None, label=None, **kw) -> Case:
        ct = ct or volume(root / f"{case_id}_ct.nii.gz")
        pet = pet or volume(root / f"{case_id}_pet.nii.gz")
        label = label or volume(root / f"{case_id}_seg.nii.gz")
        images = {"CT": ImageSource(ct), "PET": ImageSource(pet)}
        return Case(case_id, images, label=label, **kw)

    four_d = volume(root / "stack.nii.gz", shape=SHAPE + (3,))
    cases = [
        case("good"),
        case("dup"),
        case("dup"),
        case("no_image", ct=root / "absent_ct.nii.gz"),
        case("no_label", label=root / "absent_seg.nii.gz"),
        case("bad_values", label=volume(root / "v.nii.gz", values=(0, 1, 5, 7))),
        case("fraction", label=volume(root / "f.nii.gz", values=(0, 0.5), dtype=np.float32)),
        case("label_shape", label=volume(root / "s.nii.gz", shape=(8, 7, 6))),
        case("label_origin", label=volume(root / "o.nii.gz", affine=shifted(dx=2.0))),
        case("pet_spacing", pet=volume(root / "p.nii.gz", affine=shifted(stretch=2.0))),
        case("unreadable", ct=root / "junk.nii.gz"),
        Case(
            "lacks_pet",
            {"CT": ImageSource(volume(root / "l.nii.gz"))},
            label=volume(root / "x.nii.gz"),
        ),
        Case(
            "channels",
            {"CT": ImageSource(four_d, 0), "PET": ImageSource(four_d, 5)},
            label=volume(root / "c.nii.gz"),
        ),
        Case("no_label_given", case("no_label_given").images),
    ]
    (root / "junk.nii.gz").write_bytes(b"this is not a nifti file at all")
    labels = {0: "background", 1: "liver"}
    return Manifest("defects", "segmentation", ["CT", "PET"], cases, labels, source=root / "m.json")


def defective_classification(root: Path) -> Manifest:
    def case(case_id: str, **kw) -> Case:
        return Case(case_id, {"T1": ImageSource(volume(root / f"{case_id}.nii.gz"))}, **kw)

    cases = [
        case("only_t1", target="high"),
        case("mask_missing", target="low", mask=root / "absent_mask.nii.gz"),
        case("mask_grid", target="low", mask=volume(root / "m.nii.gz", shape=(8, 8, 5))),
        case("bad_class", target="medium"),
        case("no_class"),
    ]
    return Manifest("grades", "classification", ["T1", "T2"], cases, classes=["low", "high"])


def find(problems: list[str], case_id: str, *words: str) -> str:
    hits = [p for p in problems if f"case {case_id}:" in p and all(w in p for w in words)]
    assert len(hits) == 1, f"no single problem for {case_id} {words} in:\n" + "\n".join(problems)
    return hits[0]


def test_every_segmentation_defect_is_reported(tmp_path: Path) -> None:
    problems = validate_manifest(defective_segmentation(tmp_path), workers=3)
    assert "case id 'dup' appears 2 times" in problems
    find(problems, "no_image", "image 'CT' file", str(tmp_path / "absent_ct.nii.gz"), "missing")
    find(problems, "no_label", "label file", str(tmp_path / "absent_seg.nii.gz"), "missing")
    assert "values 5, 7 not in the label map" in find(
        problems, "bad_values", str(tmp_path / "v.nii.gz")
    )
    find(problems, "fraction", "non-integer values 0.5")
    find(problems, "label_shape", "label", "shape (8, 7, 6) vs (8, 7, 5)")
    origin = find(problems, "label_origin", "label", str(tmp_path / "o.nii.gz"), "origin")
    assert "shape" not in origin and "does not match image 'CT'" in origin
    spacing = find(problems, "pet_spacing", "image 'PET'", str(tmp_path / "p.nii.gz"), "spacing")
    assert "direction" not in spacing and "origin" not in spacing
    find(problems, "unreadable", "unreadable", str(tmp_path / "junk.nii.gz"))
    find(problems, "lacks_pet", "modalities ['PET'] are missing")
    find(problems, "channels", "has 3 channels but 2 modalities use it (CT, PET)")
    find(problems, "channels", "modality 'PET' reads channel 5", "which has 3 channels")
    find(problems, "no_label_given", "no label file given")
    assert not [p for p in problems if "case good:" in p]
    assert len(problems) == 13
    # threads change nothing, not even the order
    assert validate_manifest(defective_segmentation(tmp_path), workers=1) == problems


def test_label_and_geometry_checks_can_be_skipped(tmp_path: Path) -> None:
    manifest = defective_segmentation(tmp_path)
    problems = validate_manifest(manifest, check_labels=False, check_geometry=False)
    assert not [p for p in problems if "label map" in p or "does not match" in p]
    assert any("case no_label:" in p for p in problems)
    only_labels = validate_manifest(manifest, check_geometry=False)
    find(only_labels, "bad_values", "not in the label map")
    assert not [p for p in only_labels if "case unreadable:" in p]  # images are not opened


def test_every_classification_defect_is_reported(tmp_path: Path) -> None:
    manifest = defective_classification(tmp_path)
    problems = validate_manifest(manifest)
    find(problems, "mask_missing", "mask file", "missing")
    find(problems, "mask_grid", "mask", "shape (8, 8, 5) vs (8, 7, 5)")
    find(problems, "bad_class", "class 'medium' is not one of the classes ['low', 'high']")
    find(problems, "no_class", "no class given")
    assert len(problems) == 4  # missing T2 is allowed for grading
    strict = validate_manifest(manifest, allow_missing_modalities=False)
    find(strict, "only_t1", "modalities ['T2'] are missing")
    assert len(strict) == 4 + 5


def test_no_cases() -> None:
    empty = Manifest("empty", "segmentation", ["CT"], [], {0: "background"})
    assert validate_manifest(empty) == ["manifest empty has no cases"]


@pytest.mark.parametrize("make", [make_msd_spleen, make_msd_brain, make_nnunet])
def test_real_layouts_are_clean(tmp_path: Path, make) -> None:
    assert validate_manifest(load_manifest(make(tmp_path / "ds"))) == []


def test_csv_with_missing_modality_is_clean(tmp_path: Path) -> None:
    manifest = load_manifest(make_csv(tmp_path, CSV_TEXT))
    assert validate_manifest(manifest) == []
    problems = validate_manifest(manifest, allow_missing_modalities=False)
    assert problems == ["case b: modalities ['T2'] are missing (no image given)"]


def test_brain_4d_with_a_modality_too_few(tmp_path: Path) -> None:
    manifest = load_manifest(make_msd_brain(tmp_path))
    manifest.modalities.pop()
    for case in manifest.cases + manifest.test_cases:
        del case.images["T2w"]
    problems = validate_manifest(manifest)
    assert len(problems) == 3
    find(problems, "BRATS_001", "has 4 channels but 3 modalities use it (FLAIR, T1w, t1gd)")


def test_check_manifest_raises_one_line_summary(tmp_path: Path) -> None:
    manifest = defective_segmentation(tmp_path)
    check_manifest(load_manifest(make_msd_spleen(tmp_path / "ok")))  # clean: no error
    with pytest.raises(ManifestError) as err:
        check_manifest(manifest, check_labels=False)
    message = str(err.value)
    assert message.startswith(f"manifest {tmp_path / 'm.json'} has 11 problems: ")
    assert "(and 8 more)" in message and "\n" not in message
    assert err.value.problems == validate_manifest(manifest, check_labels=False)
