from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from volseg.data import Case, ImageSource, Manifest, load_splits, make_splits, save_splits
from volseg.errors import VolsegError


def classification(counts: dict[str, int]) -> Manifest:
    """One case per subject, ``counts[class]`` cases of each class."""
    cases = [
        Case(f"{name}_{i:02d}", {"T1": ImageSource(Path(f"/d/{name}_{i}.nii.gz"))}, target=name)
        for name, n in counts.items()
        for i in range(n)
    ]
    return Manifest("grades", "classification", ["T1"], cases, classes=list(counts))


def segmentation(subject_sizes: list[int]) -> Manifest:
    """Subject ``s{k}`` has ``subject_sizes[k]`` cases (e.g. follow-up scans)."""
    cases = [
        Case(f"s{k}_scan{j}", {"CT": ImageSource(Path(f"/d/s{k}_{j}.nii.gz"))}, subject=f"s{k}")
        for k, n in enumerate(subject_sizes)
        for j in range(n)
    ]
    return Manifest("organs", "segmentation", ["CT"], cases, {0: "background", 1: "liver"})


def check_partition(manifest: Manifest, splits: list[dict[str, list[str]]]) -> None:
    val = [i for fold in splits for i in fold["val"]]
    assert sorted(val) == sorted(manifest.ids)  # every case in exactly one val fold
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == sorted(manifest.ids)
        train_subjects = {manifest.case(i).patient for i in fold["train"]}
        val_subjects = {manifest.case(i).patient for i in fold["val"]}
        assert not train_subjects & val_subjects


def test_stratified_and_deterministic() -> None:
    manifest = classification({"low": 13, "high": 7, "rare": 3})
    splits = make_splits(manifest, folds=5, seed=3)
    check_partition(manifest, splits)
    per_fold = [Counter(manifest.case(i).target for i in fold["val"]) for fold in splits]
    for name in ("low", "high", "rare"):
        counts = [c[name] for c in per_fold]
        assert max(counts) - min(counts) <= 1, (name, counts)
    sizes = [len(fold["val"]) for fold in splits]
    assert max(sizes) - min(sizes) <= 1
    assert make_splits(manifest, folds=5, seed=3) == splits
    assert make_splits(manifest, folds=5, seed=4) != splits
    # ids keep manifest order inside each list
    assert splits[0]["val"] == [i for i in manifest.ids if i in splits[0]["val"]]


def test_subjects_stay_together() -> None:
    manifest = segmentation([3, 1, 1, 2, 1, 4, 1, 2, 1, 1])
    for seed in range(5):
        splits = make_splits(manifest, folds=3, seed=seed)
        check_partition(manifest, splits)
        sizes = [len(fold["val"]) for fold in splits]
        assert sum(sizes) == 17 and min(sizes) >= 5


def test_too_few_subjects() -> None:
    manifest = segmentation([2, 2, 2])
    assert len(make_splits(manifest, folds=3)) == 3
    with pytest.raises(VolsegError, match="has 3 subjects, too few for 5 folds"):
        make_splits(manifest, folds=5)
    with pytest.raises(VolsegError, match="folds must be at least 2"):
        make_splits(manifest, folds=1)


def test_round_trip(tmp_path: Path) -> None:
    manifest = segmentation([1] * 6)
    splits = make_splits(manifest, folds=3)
    path = save_splits(splits, tmp_path / "run" / "splits.json")
    assert json.loads(path.read_text()) == splits  # nnU-Net's splits_final.json layout
    assert load_splits(path, manifest) == splits
    assert list(path.parent.iterdir()) == [path]  # no temporary left behind


def test_load_detects_leakage_and_unknown_ids(tmp_path: Path) -> None:
    manifest = segmentation([2, 1, 1])  # s0 has s0_scan0 and s0_scan1
    path = tmp_path / "splits.json"
    bad = [
        {"train": ["s0_scan0", "s1_scan0"], "val": ["s0_scan1", "s2_scan0"]},
        {"train": ["s0_scan0", "ghost"], "val": ["s1_scan0", "s1_scan0"]},
        {"train": ["s2_scan0"], "val": ["s2_scan0"]},
    ]
    path.write_text(json.dumps(bad))
    with pytest.raises(VolsegError) as err:
        load_splits(path, manifest)
    message = str(err.value)
    assert message.startswith(f"{path}: splits have 4 problems: ")
    assert "fold 0: subjects in both train and val: s0" in message
    assert "fold 1: val repeats ids s1_scan0" in message
    assert "fold 1: ids not in the manifest: ghost" in message
    assert "(and 1 more)" in message  # fold 2 overlap
    path.write_text(json.dumps(bad[:1]))
    assert load_splits(path) == bad[:1]  # leakage needs the manifest to be seen


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[{", "not valid JSON"),
        ('{"train": []}', "must be a non-empty list"),
        ('[{"train": [], "validation": []}]', 'fold 0 must be {"train"'),
        ('[{"train": [1], "val": ["a"]}]', "fold 0: train and val must be lists of case ids"),
        ('[{"train": ["a"], "val": []}]', "fold 0: val is empty"),
    ],
)
def test_load_rejects_malformed(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "splits_final.json"
    path.write_text(text)
    with pytest.raises(VolsegError, match=match) as err:
        load_splits(path)
    assert str(path) in str(err.value)


def test_save_rejects_overlap(tmp_path: Path) -> None:
    with pytest.raises(VolsegError, match="ids in both train and val: a"):
        save_splits([{"train": ["a", "b"], "val": ["a"]}], tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()
