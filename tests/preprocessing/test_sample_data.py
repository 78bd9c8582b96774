"""The embedded sample set: real faces + speech, good clips per ffprobe, bad inputs as labelled, deterministic."""

from __future__ import annotations

import hashlib
import json

import pytest

from perception import media
from preprocessing.sample_data import build_sample_data, load_manifest


@pytest.fixture(scope="module")
def manifest(sample_data_dir):
    return load_manifest(sample_data_dir)


def _by_reason(manifest, reason):
    (entry,) = [e for e in manifest["files"] if e["reason"] == reason]
    return entry


def test_manifest_lists_every_file_with_checksums(sample_data_dir, manifest):
    names = {e["name"] for e in manifest["files"]}
    assert names == {p.name for p in sample_data_dir.iterdir()} - {"manifest.json"}
    for e in manifest["files"]:
        data = (sample_data_dir / e["name"]).read_bytes()
        assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        assert e["kind"] == "good" or e["kind"].startswith("bad:")
        assert e["expected"] in ("keep", "keep_video_only", "reject")
    reasons = {e["reason"] for e in manifest["files"] if e["kind"] != "good"}
    assert reasons >= {"truncated", "no_audio", "no_face", "multiple_faces", "not_a_video"}


def test_good_clips_are_25fps_h264_aac_3_to_8_seconds(sample_data_dir, manifest):
    good = [e for e in manifest["files"] if e["kind"] == "good"]
    assert len(good) >= 6
    for e in good:
        streams = media.ffprobe_streams(sample_data_dir / e["name"])
        video = [s for s in streams if s["codec_type"] == "video"]
        audio = [s for s in streams if s["codec_type"] == "audio"]
        assert len(video) == 1 and len(audio) == 1, e["name"]
        v = video[0]
        assert v["codec_name"] == "h264" and audio[0]["codec_name"] == "aac"
        assert v["avg_frame_rate"] == "25/1" and v["r_frame_rate"] == "25/1"
        assert 3.0 <= float(v["duration"]) <= 8.0
        assert int(v["nb_read_frames"]) == e["num_frames"]
        assert 384 <= min(v["width"], v["height"]) and max(v["width"], v["height"]) <= 512
        assert abs(float(audio[0]["duration"]) - float(v["duration"])) < 0.1


def test_truncated_file_probes_but_does_not_decode_fully(sample_data_dir, manifest):
    e = _by_reason(manifest, "truncated")
    info = media.probe(sample_data_dir / e["name"])
    assert info.num_frames == e["num_frames"]
    decoded = media.read_frames(sample_data_dir / e["name"])
    assert 0 < len(decoded) < e["num_frames"]


def test_video_only_file_has_no_audio_stream(sample_data_dir, manifest):
    e = _by_reason(manifest, "no_audio")
    assert e["expected"] == "keep_video_only"
    streams = media.ffprobe_streams(sample_data_dir / e["name"])
    assert [s["codec_type"] for s in streams] == ["video"]
    assert not media.probe(sample_data_dir / e["name"]).has_audio
    with pytest.raises(media.MediaError, match="no audio stream"):
        media.read_audio(sample_data_dir / e["name"])


def test_non_video_fails_to_probe_with_its_name(sample_data_dir, manifest):
    e = _by_reason(manifest, "not_a_video")
    path = sample_data_dir / e["name"]
    with pytest.raises(media.MediaError, match=e["name"]):
        media.probe(path)
    with pytest.raises(media.MediaError):
        media.ffprobe_streams(path)


def test_silent_clip_has_silent_audio_and_speech_clips_do_not(sample_data_dir, manifest):
    silent = media.read_audio(sample_data_dir / _by_reason(manifest, "silent_audio")["name"])
    assert abs(silent).max() < 1e-3
    speech = media.read_audio(sample_data_dir / next(e["name"] for e in manifest["files"] if e["kind"] == "good"))
    assert abs(speech).max() > 0.05


def test_second_build_is_byte_identical(sample_data_dir, tmp_path):
    second = build_sample_data(tmp_path, log=lambda _msg: None)
    assert (tmp_path / "manifest.json").read_bytes() == (sample_data_dir / "manifest.json").read_bytes()
    for e in second["files"]:
        assert (tmp_path / e["name"]).read_bytes() == (sample_data_dir / e["name"]).read_bytes(), e["name"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == second
