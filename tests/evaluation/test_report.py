"""Report helpers: Table-1 layout, test-set parsing, CSV, the mouth-opening proxy."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from evaluation.report import mouth_opening, table1, write_rows_csv
from evaluation.testset import parse_test_sets


def test_table1_layout_rows_and_columns_from_the_registry():
    res = {"hdtf": {"fid": 25.81, "fid_floor": 6.5, "fvd": 135.82, "fvd_floor": 40.0, "delta_facesim": 3.63,
                    "facesim_generated": 84.32, "facesim_ground_truth": 80.69, "kpsdis": 3.28, "sync_c": 3.48,
                    "sync_d": 9.1, "sync_c_gt": 4.961, "sync_d_gt": 7.5},
           "avspeech": {"fid": float("nan"), "fvd": 117.93}}
    t = table1(res, "V-Express (ours)", header=["protocol stylegan-v: ..."]).splitlines()
    assert t[0] == "protocol stylegan-v: ..." and t[1] == ""
    assert "hdtf" in t[2] and "avspeech" in t[2]
    assert t[3].split("|")[1].split() == ["FID", "FVD", "ΔFaceSim", "KpsDis", "Sync-C", "Sync-D"]
    gt, floor, ours = t[5], t[6], t[7]
    assert gt.startswith("Ground-Truth") and gt.split("|")[1].split() == ["-", "-", "0.00", "(80.69)", "-", "4.961",
                                                                          "7.500"]
    assert floor.startswith("Real vs real (floor)") and floor.split("|")[1].split()[:3] == ["6.50", "40.00", "-"]
    assert ours.startswith("V-Express (ours)")
    assert ours.split("|")[1].split() == ["25.81", "135.82", "3.63", "(84.32)", "3.28", "3.480", "9.100"]
    assert ours.split("|")[2].split()[:2] == ["nan", "117.93"]
    only = table1(res, "ours", metrics=["fid", "syncnet"]).splitlines()
    assert only[1].split("|")[1].split() == ["FID", "Sync-C", "Sync-D"]


def test_metrics_json_is_strict(tmp_path):
    import json

    from evaluation.report import strict, write_strict_json

    res = {"d": {"fid": float("nan"), "fvd": np.float64(3.5), "n": np.int64(4), "flag": np.bool_(True),
                 "inf": float("inf"), "starts": np.array([1.0, np.nan])}}
    path = write_strict_json(res, tmp_path / "metrics.json")

    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    back = json.loads(path.read_text(), parse_constant=reject)
    assert back == {"d": {"fid": None, "fvd": 3.5, "n": 4, "flag": True, "inf": None, "starts": [1.0, None]}}
    assert strict([np.float32(1.5)]) == [1.5]


def test_random_weight_label_and_no_data_plots(tmp_path, monkeypatch):
    from evaluation import report

    assert report.random_weights_label([]) == ""
    assert "RANDOM-WEIGHT feature networks (inception, i3d)" in report.random_weights_label(["inception", "i3d"])
    calls = []
    real_no_data = report._no_data
    monkeypatch.setattr(report, "_no_data", lambda ax: (calls.append(ax.get_title()), real_no_data(ax)))
    rows = [{"dataset": "d", "video": "a", "kpsdis": float("nan"), "sync_c": 1.5}]
    path = report.plot_distributions(rows, tmp_path / "dist.png", ["kpsdis", "syncnet"], ["syncnet"])
    assert path.is_file() and calls == ["kpsdis", "sync_d", "av_offset"]  # sync_c has data, the rest does not
    calls.clear()
    report.plot_distributions([], tmp_path / "empty.png", [])
    assert calls == ["(no per-video metric)"]
    calls.clear()
    titles = []
    monkeypatch.setattr(report, "_suptitle", lambda fig, nets: titles.append(report.random_weights_label(nets)))
    assert report.plot_audio_weight_sweep({}, tmp_path / "sweep.png", "d/v", ["i3d"]).is_file()
    assert len(calls) == 2 and titles == [report.random_weights_label(["i3d"])]


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
    error = "FID generated: 1 samples cannot give a covariance (need at least 2)"
    res = {"d": {"fid": float("nan"), "fid_error": error,
                 "fvd": 3.0, "fvd_rank_deficient": True, "fvd_samples_generated": 4, "fvd_samples_real": 4,
                 "fvd_dim": 400, "num_videos": 2, "kpsdis": float("nan"), "kpsdis_no_face_frames": 48,
                 "kpsdis_failed_videos": 2, "syncnet_gt_box_fallback": 2, "syncnet_failed_videos": 1,
                 "sync_tracking": "syncnet_python", "sync_min_track": 100, "sync_min_face_size": 100,
                 "face_backend": "yunet", "face_backend_recorded": "insightface:buffalo_l"}}
    text = table1(res, "ours")
    assert "FID nan: FID generated: 1 samples cannot give a covariance (need at least 2)" in text
    assert "FVD from a rank-deficient covariance (4 generated vs 4 real samples of 400-d features; full rank " \
           "needs 401)" in text
    assert "KpsDis: 48 generated frames without a face (excluded), 2 videos with none" in text
    assert "KpsDis compares keypoints of two detectors: the test set's target V-Kps come from " \
           "insightface:buffalo_l, the generated frames' from yunet" in text
    assert "2 videos cropped with the ground-truth face boxes" in text
    assert "1 generated videos not scored (see syncnet_error; a track needs more than 100 detected frames" in text
