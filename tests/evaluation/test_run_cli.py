"""``python -m evaluation.run`` argument and input errors (fast: nothing is generated)."""

from __future__ import annotations

from evaluation.run import main


def test_missing_test_set_is_a_clear_error(tmp_path, capsys):
    rc = main(["--config", "tiny/stage3", "--test-set", str(tmp_path / "nowhere"), f"eval.output_dir={tmp_path}",
               f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "eval.metrics=[fid]", "eval.fid_dims=64"])
    assert rc == 2
    assert "nowhere: test set folder not found" in capsys.readouterr().err


def test_empty_folder_and_bad_override(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["--test-set", str(tmp_path / "empty"), f"eval.output_dir={tmp_path}",
               f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "eval.metrics=[fid]", "eval.fid_dims=64"])
    assert rc == 2 and "no videos" in capsys.readouterr().err
    rc = main(["--test-set", str(tmp_path / "empty"), "eval.fid_dims=100"])
    assert rc == 2 and "eval.fid_dims" in capsys.readouterr().err


def test_unknown_protocol_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["--test-set", str(tmp_path / "empty"), "eval.protocol=fvd2048_16f"])
    err = capsys.readouterr().err
    assert rc == 2 and "eval.protocol: must be one of ['all-clips', 'latentsync', 'stylegan-v']" in err
