"""Clear errors and verified reads in training: shard checksums, missing data, corrupt checkpoints (fallback),
weights-only train state, a vanished MLflow run."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.config_tree import load
from tests.synthetic_shards import write_synthetic_shards

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def _cfg(shards, out, *extra):
    return load("tiny/stage1", [f"data.shards={shards}", "data.num_workers=0", f"train.output_dir={out}",
                                "tracking.enabled=false", *extra])


def _epoch_keys(shards: Path) -> list[str]:
    from training.data import make_loader

    cfg = _cfg(shards, shards / "run", "data.resample=false", "data.shuffle_buffer=1")
    loader, _ = make_loader(cfg.data, cfg.model, 1, 1, 0, 1)
    return sorted(k.split(":")[-1] for batch in loader for k in batch["__keys__"])


def _member_offsets(tar: Path) -> list[tuple[str, int, int]]:
    import tarfile

    with tarfile.open(tar) as t:
        return [(m.name, m.offset_data, m.size) for m in t]


def test_truncated_shard_is_reported_with_the_samples_lost(tmp_path, caplog):
    shards = write_synthetic_shards(tmp_path / "ds", clips=6, per_shard=3)
    assert _epoch_keys(shards) == [f"syn{c}_c0000" for c in range(6)]
    tar = shards / "shards" / "shard-000001.tar"
    name, offset, _ = next(m for m in _member_offsets(tar) if m[0] == "syn5_c0000.mp4")
    with open(tar, "r+b") as f:
        f.truncate(offset + 100)  # the last sample loses most of its video
    with caplog.at_level(logging.WARNING):
        keys = _epoch_keys(shards)
    assert keys == [f"syn{c}_c0000" for c in range(5)]
    lost = [r.getMessage() for r in caplog.records if "samples lost" in r.getMessage()]
    assert len(lost) == 1 and "shard-000001.tar" in lost[0] and "1 of 3 samples lost" in lost[0]
    assert "bytes, index.json records" in lost[0]


def test_damaged_sample_of_the_right_size_is_dropped_not_trained_on(tmp_path, caplog):
    shards = write_synthetic_shards(tmp_path / "ds", clips=6, per_shard=3)
    tar = shards / "shards" / "shard-000000.tar"
    _, offset, size = next(m for m in _member_offsets(tar) if m[0] == "syn1_c0000.kps.npy")
    with open(tar, "r+b") as f:
        f.seek(offset + size - 4)
        f.write(b"\x7f\x7f\x7f\x7f")  # keypoints changed, file size unchanged
    with caplog.at_level(logging.WARNING):
        keys = _epoch_keys(shards)
    assert "syn1_c0000" not in keys and len(keys) == 5
    assert any("sha256 differs" in r.getMessage() and "1 of 3 samples lost" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(120)
def test_shards_whose_samples_all_fail_verification_stop_the_loader_instead_of_spinning(tmp_path):
    from training.data import make_loader

    shards = write_synthetic_shards(tmp_path / "ds", clips=4, per_shard=2)
    index = json.loads((shards / "index.json").read_text())
    for row in index["samples"]:
        row["sha256"] = "0" * 64  # an index that matches none of the files (written by something else)
    for row in index["shards"]:
        row["sha256"] = "0" * 64
    (shards / "index.json").write_text(json.dumps(index))
    cfg = load("tiny/stage1", [f"data.shards={shards}", "data.num_workers=0"])
    loader, _ = make_loader(cfg.data, cfg.model, 1, 1, 0, 1)
    with pytest.raises(RuntimeError, match="no sample of any shard matches its index.json checksums"):
        next(iter(loader))


def test_verification_can_be_turned_off_and_is_on_by_default():
    from training.config import DataConfig

    assert DataConfig().verify_checksums is True
    assert DataConfig(verify_checksums=False).verify_checksums is False


def _train_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "training" / "run.py"), "--config", "tiny/stage1",
                           "tracking.enabled=false", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)


def test_missing_or_empty_data_fails_before_deepspeed_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "shards"
    run = _train_cli(f"data.shards={missing}", f"train.output_dir={tmp_path / 'run'}")
    assert run.returncode == 2 and run.stderr.strip() == f"training: error: data.shards: {missing}: no such file or folder"
    assert "deepspeed" not in (run.stdout + run.stderr).lower()  # nothing of DeepSpeed was started
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text(json.dumps({"format_version": 1, "shards": [], "samples": []}))
    from training.preflight import check_shards

    with pytest.raises(ValueError, match="names no shards"):
        check_shards(str(empty), verify=True)
    pattern = str(tmp_path / "shard-{000000..000001}.tar")
    with pytest.raises(FileNotFoundError, match="shard-000000.tar: no such shard"):
        check_shards(pattern, verify=True)


def test_output_dir_that_is_a_file_is_a_one_line_error(tmp_path, synthetic_shards):
    (tmp_path / "run").write_text("")
    run = _train_cli(f"data.shards={synthetic_shards}", f"train.output_dir={tmp_path / 'run'}")
    assert run.returncode == 2
    assert run.stderr.strip() == f"training: error: train.output_dir: {tmp_path / 'run'}: is a file, not a folder"


def test_train_state_loads_weights_only_and_restores_every_rng(tmp_path):
    from training.trainer import TrainState

    state = TrainState()
    state.generator.manual_seed(7)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(state.state_dict(), tmp_path / "rank-00000.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=state.generator))
    loaded = TrainState()
    loaded.load_state_dict(torch.load(tmp_path / "rank-00000.pt", weights_only=True))  # no pickle of objects
    got = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=loaded.generator))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_corrupt_latest_checkpoint_is_named_and_auto_resume_falls_back(tmp_path, synthetic_shards, caplog):
    from training.checkpoint_files import CheckpointError, choose
    from training.trainer import Trainer

    args = ("train.max_steps=2", "train.checkpoint_every=1", "train.keep_last=2")
    Trainer(_cfg(synthetic_shards, tmp_path / "run", *args)).run()
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "latest").read_text() == "step-000002"
    torch.load(ckpts / "step-000002" / "train_state" / "rank-00000.pt", weights_only=True)
    (states,) = (ckpts / "step-000002").rglob("*model_states.pt")
    states.write_bytes(states.read_bytes()[:1000])  # a truncated copy, say

    with pytest.raises(CheckpointError, match=rf"step 2\).*{states.name}: 1000 bytes"):
        choose(ckpts, str(ckpts / "step-000002"))  # --resume <that folder>: what the trainer asks rank 0
    with caplog.at_level(logging.WARNING, logger="training.checkpoint_files"):
        resumed = Trainer(_cfg(synthetic_shards, tmp_path / "run", "train.max_steps=3", "train.checkpoint_every=2"),
                          resume="auto")
        history = resumed.run()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint step 2 is unusable" in warning and str(states) in warning and "resuming from step 1" in warning
    assert len(history) == 2 and resumed.state.step == 3  # steps 2 and 3 after step 1


def test_resumed_run_whose_mlflow_run_is_gone_logs_to_a_new_run(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from training.tracking import Tracker

    out = tmp_path / "root" / "stage1"
    cfg = load("tiny/stage1", [f"train.output_dir={out}"])
    first = Tracker(cfg, enabled=True)
    first.start(resume=False)
    client = MlflowClient(tracking_uri=first.uri)
    client.delete_run(first.run_id)  # deleted in the UI
    with caplog.at_level(logging.WARNING, logger="training.tracking"):
        again = Tracker(cfg, enabled=True)
        again.start(resume=True)
    assert again.run_id != first.run_id and "no longer exists" in caplog.text
    (out / "mlflow_run.json").write_text(json.dumps({"run_id": "f" * 32}))  # a store that never had it
    third = Tracker(cfg, enabled=True)
    third.start(resume=True)
    assert third.run_id not in (first.run_id, "f" * 32)
    third.log_metrics({"loss": 1.0}, 1)
    assert client.get_run(third.run_id).data.metrics["loss"] == 1.0


def test_checkpoint_folder_being_rewritten_is_not_resumable(tmp_path):
    from training.checkpoint_files import mark_saving, problem, write_manifest

    folder = tmp_path / "step-000002"
    mark_saving(folder, 2)  # a save that never finished
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    assert "incomplete" in problem(folder)
    write_manifest(folder, 2)
    assert problem(folder) is None
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"y" * 10)  # same size, other bytes
    assert "sha256 differs" in problem(folder)
