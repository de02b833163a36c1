"""The run report's calibration table: the best epoch's temperature and ECE."""

from __future__ import annotations

import math

from volseg.report.runs import calibration_table


def test_calibration_table_shows_the_best_epoch() -> None:
    rows = [
        {"epoch": 2, "auc": 0.7, "temperature": 2.0, "ece": 0.30, "ece_calibrated": 0.10},
        {"epoch": 4, "auc": 0.9, "temperature": 1.5, "ece": 0.20, "ece_calibrated": 0.05},
        {"epoch": 6, "auc": math.nan, "temperature": 9.0, "ece": 0.9, "ece_calibrated": 0.9},
        {"epoch": 7, "train_loss": 0.1},
    ]
    table = calibration_table(rows)
    assert table is not None and "15 equal-width" in table.title
    assert table.rows == [["4", "1.500", "0.2000", "0.0500"]]


def test_no_calibration_table_for_segmentation() -> None:
    assert calibration_table([{"epoch": 1, "dice_mean": 0.8}]) is None
