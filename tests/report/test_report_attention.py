"""The grading report's attended slices: which cases, which slice, drawn the right way round."""

from __future__ import annotations

import json

import numpy as np

from volseg.data import load_manifest
from volseg.io import Geometry, Image
from volseg.metrics import evaluate_classification
from volseg.report import write_report
from volseg.report.attention import attended_slices_figure, pick_cases
from volseg.synth import synthesize_glioma

MODALITIES = ["T1", "T1ce", "T2", "FLAIR"]


def _record(case_id, predicted, p_grade3, top, used=MODALITIES):
    return {
        "case_id": case_id,
        "probabilities": {"grade2": round(1 - p_grade3, 6), "grade3": p_grade3},
        "predicted": predicted,
        "temperature": 1.0,
        "modalities_used": list(used),
        "modality_attention": {m: 1.0 / len(used) for m in used},
        "top_slices": {m: list(top) for m in MODALITIES},
        "top_slices_axis": {m: 2 for m in MODALITIES},
    }


def _predictions(folder, records):
    folder.mkdir(parents=True)
    lines = ["case_id,prob_grade2,prob_grade3,predicted"]
    lines += [
        f"{r['case_id']},{r['probabilities']['grade2']},{r['probabilities']['grade3']},"
        f"{r['predicted']}"
        for r in records
    ]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    (folder / "predictions.json").write_text(json.dumps({"cases": records}))
    return folder / "predictions.csv"


def test_grading_report_draws_the_attended_slices_misclassified_first(tmp_path):
    manifest_file = synthesize_glioma(tmp_path / "data", cases=4, shape=(24, 24, 8), seed=3)
    manifest = load_manifest(manifest_file)
    truth = {c.id: c.target for c in manifest.cases}
    ids = sorted(truth)
    wrong = "grade2" if truth[ids[2]] == "grade3" else "grade3"
    records = [
        _record(ids[0], truth[ids[0]], 0.9 if truth[ids[0]] == "grade3" else 0.1, [5, 4]),
        _record(ids[1], truth[ids[1]], 0.6 if truth[ids[1]] == "grade3" else 0.4, [3]),
        _record(ids[2], wrong, 0.8 if wrong == "grade3" else 0.2, [2, 6]),
        _record(ids[3], truth[ids[3]], 0.7 if truth[ids[3]] == "grade3" else 0.3, [1], ["T1"]),
    ]
    # misclassified first, then the least confident right ones
    picked = [r["case_id"] for r in pick_cases(records, manifest)]
    assert picked == [ids[2], ids[1], ids[3], ids[0]]
    csv_path = _predictions(tmp_path / "pred", records)
    evaluate_classification(csv_path, manifest_file, tmp_path / "eval", n_resamples=50)
    report = write_report([tmp_path / "eval"], tmp_path / "report")
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*attention*"))
    assert figures == sorted(f"eval_attention_{i}.png" for i in ids)
    assert report.is_file()
    page = (tmp_path / "report" / "report.md").read_text()
    order = [page.index(f"figures/eval_attention_{i}.png") for i in (ids[2], ids[1], ids[3])]
    assert order == sorted(order) and order[-1] < page.index(f"eval_attention_{ids[0]}.png")
    assert "Most-attended slices, in order (T1: 2, 6;" in page


def test_panel_is_the_attended_file_slice_in_radiological_orientation():
    # i grows to the patient's Right: the LPS view flips it
    geometry = Geometry((6, 5, 4), (1.0, 2.0, 3.0), (0, 0, 0), np.diag([-1.0, 1.0, 1.0]))
    volume = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    mask = np.zeros(geometry.shape, np.uint8)
    mask[1:3, 1:4, :] = 1
    record = _record("c", "grade3", 0.9, [2], ["T1", "T2"])
    record["top_slices_axis"] = {"T1": 2, "T2": 0}
    images = {"T1": Image(volume, geometry), "T2": Image(volume, geometry), "FLAIR": None}
    fig = attended_slices_figure(record, images, Image(mask, geometry), "case c")
    t1, t2, flair = fig.axes
    np.testing.assert_array_equal(t1.images[0].get_array(), volume[::-1, :, 2].T)
    # sagittal through file index i = 2 (LPS index 3), superior up
    np.testing.assert_array_equal(t2.images[0].get_array(), volume[2, :, :].T[::-1])
    assert t1.get_title() == "T1, attention 0.50\naxial slice k = 2 (of 0-3)"
    assert t2.get_title().endswith("sagittal slice i = 2 (of 0-5)")
    assert flair.get_title() == "FLAIR\nnot used" and not flair.images
    assert t1.collections  # the mask's outline
