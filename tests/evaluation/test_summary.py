"""The demo summary's table and its strict JSON."""

import math

from evaluation.summary import format_summary, pearson


def _summary(**changes):
    s = {"face_found_rate": 0.95, "kpsdis_px": 10.0, "kpsdis_copy_baseline_px": 40.0, "facesim_ref": 0.5,
         "facesim_other": 0.1, "mouth_audio_corr": 0.6, "mouth_audio_corr_w0": 0.1}
    s.update(changes)
    return s


def test_table_marks_each_check():
    table = format_summary(_summary())
    assert table.count(" ok") == 4 and "NOT MET" not in table
    table = format_summary(_summary(kpsdis_px=25.0, mouth_audio_corr=0.25))
    lines = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert lines["kpsdis_px"].endswith("NOT MET") and lines["mouth_audio_corr"].endswith("NOT MET")
    assert lines["face_found_rate"].endswith("ok")


def test_missing_values_show_as_not_available():
    table = format_summary(_summary(kpsdis_px=None))
    assert "n/a" in table and "NOT MET" in table


def test_pearson_needs_variation():
    assert math.isnan(pearson([1, 1, 1, 1], [1, 2, 3, 4]))
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == 1.0
