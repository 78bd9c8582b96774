"""Ray-free stage functions: inputs listing, seeking decode, probe verdicts, VAE latents, infra-error triage."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from perception import media
from preprocessing import inputs, pipeline, ray_session, shards, stages, tasks
from preprocessing.config import PreprocessConfig


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """30 fps source whose frame i is uniformly grey i*4 (decoding can be checked exactly up to codec noise)."""
    d = tmp_path_factory.mktemp("vid")
    frames = np.stack([np.full((64, 64, 3), 4 * i, np.uint8) for i in range(60)])
    media.write_video(d / "count.mp4", frames, 30, audio=np.sin(np.arange(32000) / 5).astype(np.float32) * 0.3,
                      crf=0)
    return d / "count.mp4"


def test_decode_clip_matches_whole_file_resampling(counter_video):
    whole = media.read_frames(counter_video, fps=25)
    for start_frame, n in [(0, 10), (25, 20), (40, 10)]:
        clip = stages.decode_clip(str(counter_video), start_frame / 25, n, 25)
        assert clip.shape == (n, 64, 64, 3)
        np.testing.assert_array_equal(clip.mean(axis=(1, 2, 3)).round(), whole[start_frame:start_frame + n].mean(
            axis=(1, 2, 3)).round())


def test_decode_past_the_end_returns_fewer_frames(counter_video):
    clip = stages.decode_clip(str(counter_video), 1.6, 25, 25)  # 2 s of video: only 0.4 s left
    assert 9 <= len(clip) <= 10


def test_probe_plans_clips_and_rejects_non_videos(counter_video, tmp_path):
    cfg = PreprocessConfig(clip_seconds=1.0, min_clip_seconds=0.5, reject_silence=False)
    plan, audio = stages.probe_video(str(counter_video), cfg)
    assert [s.num_frames for s in plan.spans] == [25, 25] and plan.has_audio and audio.ndim == 1
    text = tmp_path / "x.mp4"
    text.write_text("hello, not a video")
    assert stages.probe_video(str(text), cfg)[0].reason == "not_a_video"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(counter_video.read_bytes()[:400])  # header survives, the rest is gone
    assert stages.probe_video(str(cut), cfg)[0].reason in {"corrupt", "truncated"}
    short = PreprocessConfig(clip_seconds=4.0, min_clip_seconds=3.0)
    assert stages.probe_video(str(counter_video), short)[0].reason == "too_short"
    needs_audio = PreprocessConfig(require_audio=True, clip_seconds=1.0, min_clip_seconds=0.5)
    silent_video = tmp_path / "v.mp4"
    media.write_video(silent_video, np.zeros((30, 32, 32, 3), np.uint8), 25)
    assert stages.probe_video(str(silent_video), needs_audio)[0].reason == "no_audio"
    assert stages.probe_video(str(silent_video), PreprocessConfig(clip_seconds=1.0, min_clip_seconds=0.5))[0].has_audio \
        is False


def test_list_inputs_dir_glob_listfile_and_url(tmp_path):
    for name in ["b.mp4", "a.mov", "manifest.json", ".hidden.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mkv").write_bytes(b"x")
    found = inputs.list_inputs(str(tmp_path))
    assert [p.split("/")[-1] for p in found] == ["a.mov", "b.mp4", "c.mkv"]
    assert len(inputs.list_inputs(str(tmp_path / "*.mp4"))) == 1
    lst = tmp_path / "list.txt"
    lst.write_text("b.mp4\n# comment\nsub/c.mkv\n")
    assert [p.split("/")[-1] for p in inputs.list_inputs(str(lst))] == ["b.mp4", "c.mkv"]
    assert inputs.list_inputs(f"file://{tmp_path}/b.mp4") == [str((tmp_path / "b.mp4").resolve())]
    with pytest.raises(FileNotFoundError, match="--input"):
        inputs.list_inputs(str(tmp_path / "nothing"))


def test_remote_sources_are_localized_once(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/clip.mp4", b"data")
    local = inputs.localize("memory://bucket/clip.mp4", tmp_path)
    assert open(local, "rb").read() == b"data" and local.startswith(str(tmp_path))
    listed = inputs.list_inputs("memory://bucket/")
    assert len(listed) == 1 and listed[0].startswith("memory://") and listed[0].endswith("/bucket/clip.mp4")
    assert open(inputs.localize(listed[0], tmp_path / "again"), "rb").read() == b"data"


def test_vae_actor_adds_fp16_latents(tmp_path):
    cfg = PreprocessConfig(precompute_latents=True)
    job = pipeline.Preprocessor(cfg, tmp_path)
    actor = tasks.VaeActor(cfg, job.vae_path())
    n = 3
    crops = np.random.default_rng(0).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    sample = shards.encode_sample("v-00000000_c0000", {"num_frames": n, "has_audio": False},
                                  media.encode_mp4_bytes(crops, 25), np.zeros((n, 5, 2)), np.zeros((n, 4)))
    out = actor.add_latents({"sample": sample, "crops": crops})["sample"]
    decoded = shards.decode_sample(out, decode_video=False)
    assert decoded["latents"].shape == (n, 4, 8, 8) and decoded["latents"].dtype == np.float16
    assert decoded["latents_std"].shape == (n, 4, 8, 8) and decoded["latents_std"].dtype == np.float16
    import torch

    with torch.no_grad():  # the stored moments are the VAE posterior's, times the scaling factor
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        posterior = actor.vae.encode(x).latent_dist
    scaling = actor.vae.config.scaling_factor
    np.testing.assert_allclose(decoded["latents"], (posterior.mean * scaling).numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(decoded["latents_std"], (posterior.std * scaling).numpy(), rtol=2e-3, atol=1e-4)
    assert json.loads(out["json"])["has_latents"] is True
    assert actor.add_latents({"rejection": {"reason": "x"}}) == {"rejection": {"reason": "x"}}


def test_infra_errors_are_told_apart_from_input_errors():
    from ray import exceptions as E

    assert ray_session.is_infra_error(E.WorkerCrashedError())
    assert ray_session.is_infra_error(E.OutOfMemoryError("oom"))
    wrapped = E.RayTaskError("f", "tb", E.ObjectLostError("ab" * 14, None, "call site"))
    assert ray_session.is_infra_error(wrapped)
    assert not ray_session.is_infra_error(E.RayTaskError("f", "tb", ValueError("bad frame")))
    assert not ray_session.is_infra_error(ValueError("x"))


def test_reaper_kills_only_processes_of_its_cluster(tmp_path):
    import subprocess
    import sys

    from preprocessing import ray_reaper

    temp = str(tmp_path / "vexray-1")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    # Like ray::DashboardAgent: a log open in the session dir, and a title that zeroes argv and the environment.
    (tmp_path / "vexray-1" / "logs").mkdir(parents=True)
    (tmp_path / "vexray-12").mkdir()
    agent_code = ("import sys, time, ray._raylet; log = open(sys.argv[1], 'a'); "
                  "ray._raylet.setproctitle('ray::DashboardAgent'); open(sys.argv[2], 'w').close(); time.sleep(60)")
    agents = [subprocess.Popen([sys.executable, "-c", agent_code, f"{d}/logs/agent.log" if d.endswith("-1") else
                                f"{d}/agent.log", str(tmp_path / f"ready-{i}")])
              for i, d in enumerate((temp, str(tmp_path / "vexray-12")))]
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        time.sleep(0.1)
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    tag = ray_reaper.owner_tag(driver.pid, temp)
    ours = subprocess.Popen([*sleep, f"--log-dir={temp}/session_x/logs"])
    titled = subprocess.Popen(sleep, env={**os.environ, ray_reaper.OWNER_ENV: tag})  # like ray::DashboardAgent
    other = subprocess.Popen([*sleep, f"--log-dir={temp}2/session_y"],
                             env={**os.environ, ray_reaper.OWNER_ENV: tag + "0"})
    try:
        reaper = ray_reaper.start_reaper(driver.pid, temp)
        driver.wait()
        reaper.wait(timeout=30)
        assert ours.wait(timeout=10) is not None and titled.wait(timeout=10) is not None
        assert agents[0].wait(timeout=10) is not None
        assert other.poll() is None and agents[1].poll() is None  # another cluster whose dir starts like ours
    finally:
        for p in (ours, titled, other, *agents):
            p.kill()
            p.wait()


def _clip_inputs(n=6, size=160, lip_boxes=None):
    """A still frame with a drawn face-sized square and per-frame detections (19-column rows)."""
    from preprocessing import clips

    frames = np.full((n, size, size, 3), 120, np.uint8)
    rows = []
    for i in range(n):
        box, kps = [40, 40, 120, 120], [[60, 70], [100, 70], [80, 90], [62, 105], [98, 105]]
        lip = lip_boxes[i] if lip_boxes is not None else [np.nan] * 4
        rows.append(np.array([[*box, 0.95, *np.ravel(kps), *lip]], np.float32))
    plan = stages.VideoPlan("/x/v.mp4", "v-00000000", 25.0, n / 25, size, size, 25.0, False,
                            [clips.ClipSpan(0, 0, n)])
    cfg = PreprocessConfig(crop_size=64, min_face_size=32, crop_margin=0.6, reject_silence=False)
    return plan, frames, rows, cfg


def test_crop_and_encode_stores_landmark_lip_boxes_or_the_five_point_approximation():
    from perception import lips
    from preprocessing import clips

    lip_boxes = np.array([[66, 100, 94, 112 + i] for i in range(6)], np.float32)  # the mouth opens
    plan, frames, rows, cfg = _clip_inputs(lip_boxes=lip_boxes)
    sample, rejection, crops = stages.crop_and_encode(plan, plan.spans[0], frames, rows, None, None, cfg,
                                                      "insightface:tiny", "")
    assert rejection is None
    d = shards.decode_sample(sample, decode_video=False)
    assert d["meta"]["lips"] == "landmark_2d_106" and d["lips"].shape == (6, 4)
    crop_box = np.array(d["meta"]["crop_box"], np.float32)
    mapped = clips.to_crop_coords(lip_boxes.reshape(-1, 2, 2), crop_box, 64).reshape(-1, 4)
    np.testing.assert_allclose(d["lips"], mapped, atol=1e-4)
    assert np.all(np.diff(d["lips"][:, 3]) > 0)  # the box follows the opening

    plan, frames, rows, cfg = _clip_inputs()  # a 5-point backend: no lip columns
    sample, _, crops = stages.crop_and_encode(plan, plan.spans[0], frames, rows, None, None, cfg, "yunet", "")
    d = shards.decode_sample(sample, decode_video=False)
    assert d["meta"]["lips"] == "kps5"
    np.testing.assert_allclose(d["lips"], lips.lip_boxes_from_corners(d["kps"], lips.mouth_cavities(crops, d["kps"])),
                               atol=1e-4)
    rows15 = [r[:, :15] for r in rows]  # rows without lip columns are read as such
    assert stages.faces_from_array(rows15[0])[0].lip_box is None
