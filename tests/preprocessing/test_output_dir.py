"""Reruns into an existing output: the config fingerprint (never mix two configs), one job per output folder
(a lock a killed job does not leave stuck), byte-identical inputs under two names kept once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from perception import media
from preprocessing import output_dir, pipeline, shards
from preprocessing.config import PreprocessConfig, output_fingerprint

REPO = Path(__file__).resolve().parents[2]


def test_fingerprint_is_the_fields_declared_output_affecting_and_the_format_version():
    fields = {f.name: f for f in dataclasses.fields(PreprocessConfig)}
    fp = output_fingerprint(PreprocessConfig())
    declared = {f"preprocess.{n}" for n, f in fields.items() if f.metadata.get("affects_output")}
    assert set(fp) == declared | {"shard format_version"} and fp["shard format_version"] == shards.FORMAT_VERSION
    for name in ("crop_size", "fps", "audio_encoder", "audio_encoder_path", "face_backend"):
        assert f"preprocess.{name}" in fp
    assert not {"preprocess.num_workers", "preprocess.ray_temp_dir"} & set(fp)


def test_rerun_with_other_output_config_refuses_naming_the_fields(tmp_path):
    video = tmp_path / "in" / "v.mp4"
    media.write_video(video, np.zeros((10, 32, 32, 3), np.uint8), 25)
    out = tmp_path / "out"
    output_dir.check_config(output_dir.prepare_output(out), PreprocessConfig())  # what the first job records
    changed = PreprocessConfig(crop_size=256, fps=30.0)
    with pytest.raises(output_dir.ConfigChanged) as err:
        pipeline.run(str(video.parent), out, changed)  # refused before Ray starts
    text = str(err.value)
    assert "preprocess.crop_size 512 -> 256" in text and "preprocess.fps 25.0 -> 30.0" in text
    assert "on_config_change=reprocess" in text and "preprocess.num_workers" not in text
    assert json.loads((out / "work" / "job.json").read_text())["fingerprint"]["preprocess.crop_size"] == 512


def test_an_index_written_before_fingerprints_counts_as_the_previous_config(tmp_path):
    from preprocessing.config import index_config

    shards.write_json_atomic(tmp_path / "index.json", shards.build_index(index_config(PreprocessConfig()), [], [], {}))
    with pytest.raises(output_dir.ConfigChanged, match="crop_size 512 -> 128"):
        output_dir.check_config(tmp_path, PreprocessConfig(crop_size=128))
    output_dir.check_config(tmp_path, PreprocessConfig(num_workers=4))  # a runtime field: fine


HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from preprocessing.output_dir import OutputLock; "
        "lock = OutputLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)")


def test_second_job_on_the_same_output_refuses_naming_the_first_and_a_killed_job_frees_it(tmp_path):
    out = output_dir.prepare_output(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(output_dir.OutputInUse, match=f"pid {holder.pid} on "):
            pipeline.run(str(tmp_path), out, PreprocessConfig())
        cli = subprocess.run([sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(tmp_path),
                              "--output", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr
        assert cli.stderr.strip().count("\n") == 0 and f"pid {holder.pid}" in cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_dir.OutputLock(out):  # not stuck after SIGKILL
        pass


def test_output_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "out").write_text("x")
    cli = subprocess.run([sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(tmp_path),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cli.returncode == 2 and cli.stderr.strip() == f"preprocess: error: --output {tmp_path / 'out'}: is a " \
                                                         "file, not a folder"


def test_duplicates_keep_the_first_video_id_whatever_the_order():
    recs = [{"source": s, "video_id": v, "samples": [{"key": v}], "rejected": [], "content_sha256": h}
            for s, v, h in [("b.mp4", "b-1", "aa"), ("a.mp4", "a-2", "aa"), ("c.mp4", "c-3", "cc")]]
    resolved = output_dir.resolve_duplicates(sorted(recs, key=lambda r: r["video_id"]))
    assert [len(r["samples"]) for r in resolved] == [1, 0, 1]  # a-2 kept, b-1 reported
    (dup,) = resolved[1]["rejected"]
    assert dup["reason"] == "duplicate" and dup["source"] == "b.mp4" and "as a.mp4" in dup["detail"]


def _face_video(path: Path) -> Path:
    from skimage import data as skdata

    face = np.ascontiguousarray(skdata.astronaut()[0:320, 64:384])
    t = np.arange(int(2.0 * 16000)) / 16000
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return media.write_video(path, np.stack([face] * 50), 25, audio=voice)


def _preprocess(inputs: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    temp = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    cmd = [sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(inputs), "--output", str(out),
           "clip_seconds=1", "min_clip_seconds=1", "progress_every_s=60", f"ray_temp_dir={temp}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_rerun_with_new_crop_size_refuses_then_reprocesses_and_duplicates_are_reported(tmp_path):
    inputs = tmp_path / "in"
    _face_video(inputs / "talk.mp4")
    (inputs / "talk_copy.mp4").write_bytes((inputs / "talk.mp4").read_bytes())
    out = tmp_path / "out"
    first = _preprocess(inputs, out, "crop_size=64")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    index = shards.read_index(out)
    assert {Path(s["key"]).name.split("-")[0] for s in index["samples"]} == {"talk"} and index["totals"]["samples"] == 2
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(Path(r["source"]).name, r["reason"]) for r in rejected] == [("talk_copy.mp4", "duplicate")]

    refused = _preprocess(inputs, out, "crop_size=128")
    assert refused.returncode == 2 and "preprocess.crop_size 64 -> 128" in refused.stderr
    assert "Traceback" not in refused.stderr and shards.read_index(out) == index  # nothing changed

    again = _preprocess(inputs, out, "crop_size=128", "on_config_change=reprocess")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    index = shards.read_index(out)
    assert index["config"]["crop_size"] == 128 and index["totals"]["samples"] == 2
    for sample in shards.open_dataset(out):
        assert sample["frames"].shape[1:3] == (128, 128) and sample["meta"]["crop_size"] == 128
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(Path(r["source"]).name, r["reason"]) for r in rejected] == [("talk_copy.mp4", "duplicate")]
