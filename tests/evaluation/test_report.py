"""Report helpers: Table-1 layout, test-set parsing, CSV, the mouth-opening proxy."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from evaluation.report import mouth_opening, table1, write_rows_csv
from evaluation.testset import parse_test_sets


def test_table1_layout():
    res = {"hdtf": {"fid": 25.81, "fvd": 135.82, "delta_facesim": 3.63, "facesim_generated": 84.32,
                    "facesim_ground_truth": 80.69, "kpsdis": 3.28, "lse_c": 3.48, "lse_c_gt": 4.961},
           "avspeech": {"fid": float("nan"), "fvd": 117.93}}
    t = table1(res, "V-Express (ours)").splitlines()
    assert "hdtf" in t[0] and "avspeech" in t[0]
    assert t[1].split("|")[1].split() == ["FID", "FVD", "ΔFaceSim", "KpsDis", "SyncNet"]
    gt, ours = t[3], t[4]
    assert gt.startswith("Ground-Truth") and "0.00 (80.69)" in gt and "4.961" in gt
    assert ours.startswith("V-Express (ours)")
    assert ours.split("|")[1].split() == ["25.81", "135.82", "3.63", "(84.32)", "3.28", "3.480"]
    assert ours.split("|")[2].split()[:2] == ["nan", "117.93"]


def test_parse_test_sets():
    assert parse_test_sets("a=/x/y,/data/hdtf_test/") == [("a", "/x/y"), ("hdtf_test", "/data/hdtf_test/")]
    with pytest.raises(ValueError, match="no test set"):
        parse_test_sets("")
    with pytest.raises(ValueError, match="unique"):
        parse_test_sets("/a/x,/b/x")


def test_csv_union_of_columns(tmp_path):
    path = write_rows_csv([{"video": "a", "fid": 1.0}, {"video": "b", "kpsdis": float("nan")}], tmp_path / "t.csv")
    rows = list(csv.DictReader(open(path)))
    assert rows[0]["fid"] == "1.0" and rows[1]["kpsdis"] == "nan" and rows[1]["fid"] == ""


def test_mouth_opening_rises_with_contrast():
    closed = np.full((1, 20, 20, 3), 128, np.uint8)
    opened = closed.copy()
    opened[0, 8:12, 5:15] = 0  # a dark cavity inside the box
    box = np.array([[4, 6, 16, 14]])
    assert mouth_opening(closed, box)[0] == pytest.approx(0.0)
    assert mouth_opening(opened, box)[0] > 0.1
    assert np.isnan(mouth_opening(closed, np.array([[30, 30, 40, 40]]))[0])  # box outside the frame


def test_table_notes_explain_nans():
    res = {"d": {"fid": float("nan"), "fid_samples": 48, "fid_required_samples": 65, "fvd": 3.0,
                 "fvd_rank_deficient": 1.0, "fvd_samples": 4, "fvd_required_samples": 401, "num_videos": 2,
                 "kpsdis": float("nan"), "kpsdis_no_face_frames": 48, "kpsdis_failed_videos": 2,
                 "syncnet_gt_box_fallback": 2}}
    text = table1(res, "ours")
    assert "FID nan: too few samples for a full-rank covariance (48 samples, 65 needed)" in text
    assert "FVD computed from a rank-deficient covariance (4 samples, 401 needed)" in text
    assert "KpsDis: 48 generated frames without a face (excluded), 2 videos with none" in text
    assert "2 videos cropped with the ground-truth face boxes" in text
