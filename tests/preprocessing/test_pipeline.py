"""End to end: `python infra/preprocess.py` on the embedded sample data (real Ray, real YuNet, tiny wav2vec2).

- the shards read back with `webdataset.WebDataset` and every field decodes and agrees;
- rejected.jsonl names every bad input of the sample manifest with its reason;
- Ray listens on loopback only and no Ray process survives the job;
- SIGKILL of the driver partway + rerun (with a worker that dies once) -> the same index as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import webdataset as wds

from preprocessing import shards, tasks

REPO = Path(__file__).resolve().parents[2]
# Manifest reason -> the reason the pipeline must give (same vocabulary, plus what a truncated file decodes to).
EXPECTED_REASONS = {
    "truncated": {"truncated", "corrupt"},
    "no_face": {"no_face"},
    "multiple_faces": {"multiple_faces"},
    "face_too_small": {"face_too_small"},
    "silent_audio": {"silent_audio"},
    "not_a_video": {"not_a_video"},
}
OVERRIDES = ["num_workers=2", "progress_every_s=2"]


class ProcessWatch:
    """Samples the process tree of a command and the TCP ports it listens on while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.pids, self.listening = pid, {pid}, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pids |= {c.pid for c in psutil.Process(self.pid).children(recursive=True)}
            except psutil.Error:
                pass
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.pid in self.pids:
                    self.listening.add(conn.laddr.ip)
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def survivors(self) -> list[psutil.Process]:
        alive = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        return alive


def start(sample_dir: Path, out: Path, temp: str, env_extra: dict | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    cmd = [sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(sample_dir), "--output", str(out),
           *OVERRIDES, *extra, f"ray_temp_dir={temp}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, watch: ProcessWatch, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    time.sleep(1.0)
    watch.stop()
    assert proc.returncode == 0, out[-4000:]
    return out


def kill_leftovers(watch: ProcessWatch, wait_s: float = 60.0) -> list[str]:
    """Give the job's processes ``wait_s`` to go, then kill (by pid) those of our own job that outlived it and
    return their names."""
    deadline = time.time() + wait_s
    while watch.survivors() and time.time() < deadline:
        time.sleep(0.5)
    names = []
    for p in watch.survivors():
        names.append(p.name())
        p.kill()
    return names


@pytest.fixture(scope="module")
def run_once(sample_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    temp = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    proc = start(sample_data_dir, out, temp)
    watch = ProcessWatch(proc.pid)
    log = finish(proc, watch)
    return out, log, watch


@pytest.mark.slow
def test_shards_read_back_with_webdataset_and_fields_agree(run_once, sample_data_dir):
    out, log, _ = run_once
    assert "[preprocess] videos" in log and "video-s/s" in log  # the progress line
    index = shards.read_index(out)
    manifest = json.loads((sample_data_dir / "manifest.json").read_text())
    kept = {f["name"] for f in manifest["files"] if f["expected"].startswith("keep")}
    assert index["totals"]["samples"] == len(index["samples"]) >= len(kept)
    urls = [str(out / "shards" / s["name"]) for s in index["shards"]]
    seen = set()
    for raw in wds.WebDataset(urls, shardshuffle=False):
        s = shards.decode_sample(raw)
        meta, n = s["meta"], s["meta"]["num_frames"]
        seen.add(Path(meta["source"]).name)
        assert s["frames"].shape == (n, 512, 512, 3)
        assert s["kps"].shape == (n, 5, 2) and np.all((s["kps"] >= 0) & (s["kps"] <= 512))
        assert s["mouth"].shape == (n, 4) and np.all(s["mouth"][:, 2:] > s["mouth"][:, :2])
        assert meta["lips"] == "kps5" and s["lips"].shape == (n, 4) and np.all(s["lips"][:, 2:] > s["lips"][:, :2])
        assert np.all((s["lips"] >= 0) & (s["lips"] <= 512))
        if meta["has_audio"]:
            assert s["audio_features"].shape == (2 * n, 32) and s["audio_features"].dtype == np.float16
            assert abs(len(s["audio"]) - n / meta["fps"] * 16000) <= 1
        else:
            assert Path(meta["source"]).name == "bad_no_audio.mp4" and "audio_features" not in s
        assert meta["format_version"] == shards.FORMAT_VERSION and meta["face_backend"] == "yunet"
    assert seen == kept  # every good video gave samples; no bad one did
    sha = {row["key"]: row["sha256"] for row in index["samples"]}
    for sample in shards.iter_tar_samples(urls[0]):
        assert shards.sample_sha256(sample) == sha[sample["__key__"]]
    assert index["shards"][0]["sha256"] == shards.file_sha256(urls[0])


@pytest.mark.slow
def test_rejected_report_names_every_bad_input(run_once, sample_data_dir):
    out, _, _ = run_once
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    by_name = {}
    for r in rejected:
        by_name.setdefault(Path(r["source"]).name, set()).add(r["reason"])
        assert r["detail"]
    manifest = json.loads((sample_data_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["expected"] == "reject":
            assert by_name.get(f["name"], set()) & EXPECTED_REASONS[f["reason"]], (f["name"], by_name.get(f["name"]))
        else:
            assert f["name"] not in by_name


@pytest.mark.slow
def test_ray_listens_on_loopback_only_and_stops(run_once):
    _, _, watch = run_once
    assert watch.listening, "no listening socket seen: the watcher did not see Ray run"
    assert watch.listening <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, watch.listening
    assert not kill_leftovers(watch)


@pytest.mark.slow
def test_sigkill_driver_then_resume_gives_identical_index(run_once, sample_data_dir, tmp_path):
    reference = shards.read_index(run_once[0])
    out = tmp_path / "out"
    temp = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    proc = start(sample_data_dir, out, temp)
    watch = ProcessWatch(proc.pid)
    deadline = time.time() + 400
    while len(list((out / "work" / "videos").glob("*.json"))) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    watch.stop()
    leftovers = kill_leftovers(watch)  # preprocessing.ray_reaper stops the orphaned cluster
    assert not (out / "index.json").exists()
    done_before = {p.name for p in (out / "work" / "videos").glob("*.json")}
    # Rerun the same command; one crop+encode worker dies mid-task (Ray must retry it).
    crash = tmp_path / "crash"
    proc = start(sample_data_dir, out, temp, {tasks.CRASH_ONCE_ENV: str(crash)})
    watch = ProcessWatch(proc.pid)
    log = finish(proc, watch)
    assert (crash / "crashed").exists(), "the injected worker death did not happen"
    assert not kill_leftovers(watch)
    assert f"videos {len(done_before)}/" in log or done_before  # resumed past the committed videos
    resumed = shards.read_index(out)
    assert resumed["samples"] == reference["samples"]
    assert resumed["shards"] == reference["shards"]
    assert resumed == reference
    assert (out / "rejected.jsonl").read_text() == (run_once[0] / "rejected.jsonl").read_text()
    assert not list((out / "shards").glob("*.tmp*")) and not leftovers, leftovers


@pytest.mark.slow
def test_list_file_input_with_precomputed_latents(sample_data_dir, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# one good video and one without audio\n{sample_data_dir / 'good_carphone_a0009.mp4'}\n"
                       f"{sample_data_dir / 'bad_no_audio.mp4'}\n")
    out = tmp_path / "out"
    temp = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    # 128² crops keep the tiny VAE cheap on CPU; latents are crop_size / 8.
    proc = start(listing, out, temp, extra=("precompute_latents=true", "crop_size=128"))
    watch = ProcessWatch(proc.pid)
    proc.communicate(timeout=600)
    watch.stop()
    assert proc.returncode == 0
    assert not kill_leftovers(watch)
    samples = list(shards.open_dataset(out, decode_video=False))
    assert len(samples) == 2 and all(s["meta"]["has_latents"] for s in samples)
    for s in samples:
        n = s["meta"]["num_frames"]
        assert s["latents"].shape == (n, 4, 16, 16) and s["latents"].dtype == np.float16
        assert s["latents_std"].shape == s["latents"].shape and s["latents_std"].dtype == np.float16
        assert s["latents_std"].min() > 0
