"""Real-world container quirks, on small videos made with the ffmpeg CLI: streams that start at different times
(and AAC priming / edit lists), Matroska/WebM without per-stream durations, phone rotation metadata."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perception import media
from preprocessing import stages
from preprocessing.config import PreprocessConfig

FPS, SR = 25, 16000
FLASHES = range(1, 7)  # a white frame and a click at each of these seconds of the video
CLIP = PreprocessConfig(clip_seconds=4.0, min_clip_seconds=2.0, reject_silence=False)


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-loglevel", "error", *args], input=stdin, check=True)


def clapper(path: Path, video_offset: float = 0.0, audio_offset: float = 0.0, extra_audio_s: float = 0.0,
            seconds: float = 7.0, video_codec: tuple[str, ...] = ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
            audio_codec: tuple[str, ...] = ("-c:a", "aac")) -> Path:
    """A 64² video, black but for one white frame per second, and a click at the moment each white frame is
    shown; the streams are shifted with ``-itsoffset`` (the content is shifted back, so they stay in sync)."""
    n = int(seconds * FPS)
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    flashes = [k for k in FLASHES if k < seconds]
    for k in flashes:
        frames[k * FPS] = 255
    audio_len = seconds + video_offset - audio_offset + extra_audio_s
    wav = np.random.default_rng(0).standard_normal(int(audio_len * SR)).astype(np.float32) * 0.01
    for k in flashes:
        at = int(round((k + video_offset - audio_offset) * SR))  # shown at k + video_offset
        wav[at:at + 400] = 0.8 * np.sin(np.arange(400) / 3)
    sf.write(path.with_suffix(".wav"), wav, SR)
    video = path.with_name(path.stem + "-video.mkv")
    _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x64", "-r", str(FPS), "-i", "pipe:0", *video_codec,
             str(video)], stdin=frames.tobytes())
    _ffmpeg(["-itsoffset", str(video_offset), "-i", str(video), "-itsoffset", str(audio_offset),
             "-i", str(path.with_suffix(".wav")), "-map", "0:v", "-map", "1:a", "-c:v", "copy", *audio_codec,
             str(path)])
    return path


def sync_errors(path: Path) -> list[float]:
    """For every white frame of every planned clip: click time - frame time within the clip, in seconds."""
    plan, audio = stages.probe_video(str(path), CLIP)
    assert isinstance(plan, stages.VideoPlan), plan
    errors = []
    for span in plan.spans:
        frames = stages.decode_clip(str(path), span.start_s(FPS), span.num_frames, FPS)
        assert len(frames) == span.num_frames, f"clip {span.index}: {len(frames)}/{span.num_frames} frames"
        seg = stages.clip_audio(audio, span.start_s(FPS), span.num_frames, FPS)
        clicks = np.flatnonzero(np.abs(seg) > 0.4)
        onsets = clicks[np.insert(np.diff(clicks) > SR // 10, 0, True)] / SR
        for f in np.flatnonzero(frames.mean(axis=(1, 2, 3)) > 128):
            if 0.1 < f / FPS < span.num_frames / FPS - 0.1:
                errors.append(float(onsets[np.argmin(np.abs(onsets - f / FPS))] - f / FPS) if len(onsets) else 9.0)
    return errors


@pytest.mark.parametrize("case", ["audio_starts_later_mp4", "audio_starts_earlier_mkv", "audio_starts_earlier_mp4"])
def test_audio_is_aligned_with_the_frames_whatever_the_stream_start_times(tmp_path, case):
    if case == "audio_starts_later_mp4":
        path = clapper(tmp_path / "late.mp4", audio_offset=0.5)
    else:
        path = clapper(tmp_path / "early.mkv", video_offset=0.5)
        if case.endswith("mp4"):  # remuxed: the mp4 keeps the offset as an edit list
            _ffmpeg(["-i", str(path), "-c", "copy", str(tmp_path / "early.mp4")])
            path = tmp_path / "early.mp4"
    errors = sync_errors(path)
    assert len(errors) >= 5
    assert max(abs(e) for e in errors) <= 1 / FPS, errors  # within one video frame


def test_webm_keeps_clips_that_end_with_the_video_not_with_longer_audio(tmp_path):
    path = clapper(tmp_path / "talk.webm", extra_audio_s=0.3, video_codec=("-c:v", "libvpx-vp9", "-b:v", "200k"),
                   audio_codec=("-c:a", "libopus"))
    info = media.probe(path)
    assert abs(info.duration_s - 7.0) < 0.05  # the video's own length, not the container's 7.3 s
    plan, _ = stages.probe_video(str(path), CLIP)
    assert [s.num_frames for s in plan.spans] == [100, 75]
    assert max(abs(e) for e in sync_errors(path)) <= 1 / FPS  # both clips decode whole, in sync


def test_mkv_whose_audio_outlasts_the_video_plans_no_clip_past_its_end(tmp_path):
    path = clapper(tmp_path / "long_audio.mkv", seconds=4.0, extra_audio_s=6.0)
    plan, _ = stages.probe_video(str(path), CLIP)
    assert abs(plan.duration_s - 4.0) < 0.05 and [s.num_frames for s in plan.spans] == [100]
    # A span after the last frame (what the container's 10 s duration used to plan) is an empty clip that is
    # rejected as truncated, not a ZeroDivisionError in face detection.
    past = stages.decode_clip(str(path), 4.0, 100, FPS)
    assert past.shape == (0, 64, 64, 3) and stages.detect_faces(None, past, 320) == []


def test_task_errors_are_reported_as_plain_text_with_their_root_cause():
    import traceback

    from ray import exceptions as E

    from preprocessing.ray_session import describe_error

    def detection_scale():
        return 1 / 0

    try:
        detection_scale()
    except ZeroDivisionError as exc:
        tb = "".join(traceback.format_exception(exc))
        inner = E.RayTaskError("FaceActor.detect", tb, exc, proctitle="ray::FaceActor.detect", pid=7,
                               ip="127.0.0.1").as_instanceof_cause()
    outer = E.RayTaskError("crop_encode_task", "\x1b[31m" + "x" * 2000 + "\x1b[0m", inner)  # a dependency failed
    text = describe_error(outer)
    assert "\x1b" not in text and "\n" not in text and len(text) <= 500
    assert text.startswith("ZeroDivisionError: division by zero") and "in detection_scale" in text


def test_rotated_phone_video_is_decoded_upright_and_its_face_found(tmp_path):
    from skimage import data as skdata

    from perception.faces import make_face_backend

    upright = np.ascontiguousarray(skdata.astronaut()[40:360, 80:320])  # 240 x 320 portrait, face in it
    frames = np.stack([upright] * 10)
    coded = np.ascontiguousarray(np.rot90(frames, k=1, axes=(1, 2)))  # stored landscape, as phones do
    media.write_video(tmp_path / "coded.mp4", coded, FPS)
    _ffmpeg(["-i", str(tmp_path / "coded.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=270",
             str(tmp_path / "phone.mp4")])  # a display matrix: turn 90 degrees clockwise to show
    info = media.probe(tmp_path / "phone.mp4")
    assert (info.width, info.height, info.rotation) == (240, 320, 270)
    clip = stages.decode_clip(str(tmp_path / "phone.mp4"), 0.0, 10, FPS)
    assert clip.shape == (10, 320, 240, 3)
    assert np.abs(clip.astype(int) - frames).mean() < 4  # codec noise only
    assert media.read_frames(tmp_path / "phone.mp4").shape == (10, 320, 240, 3)
    faces = stages.detect_faces(make_face_backend("yunet"), clip, 320)
    assert all(len(f) == 1 for f in faces)
    for (face,) in faces:  # an upright face: eyes level, above the nose (a sideways one is also detected)
        kps = face[5:15].reshape(5, 2)
        assert abs(kps[0, 1] - kps[1, 1]) < 0.3 * abs(kps[0, 0] - kps[1, 0]) and kps[:2, 1].max() < kps[2, 1]
