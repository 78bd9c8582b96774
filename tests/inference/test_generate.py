"""``python -m infra.generate`` on the tiny preset (random weights, CPU): exact frame count, fps, muxed audio."""

import json
import subprocess

import numpy as np
import pytest

from infra.generate import main
from model.generate import InputError, generate, load_kps_file, num_output_frames
from perception.media import ffprobe_streams, read_frames, write_video, write_wav

FAST = ["inference.num_inference_steps=2", "inference.progress=false"]


@pytest.fixture()
def inputs(tmp_path, reference_image, speech_like_audio):
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.fromarray(reference_image).save(ref)
    wav = write_wav(tmp_path / "speech.wav", speech_like_audio(3.2))
    return ref, wav


def _streams(path):
    streams = ffprobe_streams(path)
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    return video, audio


def test_frame_count_rule():
    assert num_output_frames(51200, 25) == 80  # 3.2 s
    assert num_output_frames(16000 * 3 + 320, 25) == 76  # 3.02 s -> 75.5 -> rounds half up
    assert num_output_frames(16000, 30) == 30


def test_cli_holds_reference_face_80_frames_25fps_with_audio(inputs, tmp_path, tiny_pipeline):
    ref, wav = inputs
    out = tmp_path / "out.mp4"
    assert main(["--reference", str(ref), "--audio", str(wav), "--output", str(out), *FAST]) == 0
    video, audio = _streams(out)
    assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) == 80
    assert video["avg_frame_rate"] == "25/1" and (int(video["width"]), int(video["height"])) == (64, 64)
    assert audio["codec_name"] == "aac" and abs(float(audio["duration"]) - 3.2) < 0.05
    assert abs(float(video["duration"]) - 3.2) < 1e-6


def test_kps_file_naive_retarget_m4a(inputs, tmp_path, tiny_cfg, tiny_pipeline):
    ref, wav = inputs
    m4a = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    t = np.arange(40)[:, None]  # 40 keypoint frames (512 px frame) -> interpolated to the video length
    kps = np.stack([np.concatenate([200 + 5 * np.sin(t / 4), 240 + 0 * t], 1),
                    np.concatenate([300 + 5 * np.sin(t / 4), 240 + 0 * t], 1),
                    np.concatenate([250 + 5 * np.sin(t / 4), 300 + 3 * np.cos(t / 5)], 1)], 1)
    kps_file = tmp_path / "kps.json"
    kps_file.write_text(json.dumps({"kps": kps.tolist(), "image_size": 512}))
    from infra.config_tree import load

    cfg = load("tiny/stage3", [*FAST, "inference.retarget_strategy=naive_retarget", "inference.context_frames=24"])
    out = generate(cfg, ref, m4a, tmp_path / "kps.mp4", kps_path=kps_file, pipeline=tiny_pipeline)
    video, audio = _streams(out)
    assert int(video["nb_read_frames"]) == 80 and abs(float(audio["duration"]) - 3.2) < 0.05


def test_driving_video(inputs, tmp_path, reference_image, tiny_pipeline):
    import cv2

    ref, wav = inputs
    frames = []
    for i in range(50):  # 2 s of the face moving: driving shorter than the audio -> stretched
        m = np.float32([[1, 0, 6 * np.sin(i / 6)], [0, 1, 4 * np.cos(i / 7)]])
        frames.append(cv2.warpAffine(reference_image, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
    drive = write_video(tmp_path / "drive.mp4", np.stack(frames)[:, ::2, ::2].copy(), 25)
    from infra.config_tree import load

    cfg = load("tiny/stage3", [*FAST, "inference.retarget_strategy=offset_retarget"])
    out = generate(cfg, ref, wav, tmp_path / "drv.mp4", driving_video=drive, pipeline=tiny_pipeline)
    assert len(read_frames(out)) == 80


@pytest.mark.parametrize("case,match", [
    ("missing_reference", "ref_missing.png: reference image not found"),
    ("bad_reference_type", "ref.gif: unsupported reference image type"),
    ("corrupt_reference", "broken.png: cannot read the reference image"),
    ("missing_audio", "nope.wav: audio file not found"),
    ("not_audio", "ref.png: "),
    ("bad_kps_suffix", "kps.txt: unsupported keypoint file type"),
    ("bad_kps_shape", "kps.npy: keypoints must have shape"),
    ("output_not_mp4", "out.avi: the output must be an .mp4"),
    ("missing_checkpoint", "no_ckpt: checkpoint folder not found"),
])
def test_input_errors_name_the_file(inputs, tmp_path, tiny_cfg, case, match):
    ref, wav = inputs
    kw = {"reference": ref, "audio_path": wav, "output": tmp_path / "out.mp4"}
    if case == "missing_reference":
        kw["reference"] = tmp_path / "ref_missing.png"
    elif case == "bad_reference_type":
        (tmp_path / "ref.gif").write_bytes(b"GIF89a")
        kw["reference"] = tmp_path / "ref.gif"
    elif case == "corrupt_reference":
        (tmp_path / "broken.png").write_bytes(b"not a png")
        kw["reference"] = tmp_path / "broken.png"
    elif case == "missing_audio":
        kw["audio_path"] = tmp_path / "nope.wav"
    elif case == "not_audio":
        kw["audio_path"] = ref
    elif case == "bad_kps_suffix":
        (tmp_path / "kps.txt").write_text("1 2 3")
        kw["kps_path"] = tmp_path / "kps.txt"
    elif case == "bad_kps_shape":
        np.save(tmp_path / "kps.npy", np.zeros((10, 2)))
        kw["kps_path"] = tmp_path / "kps.npy"
    elif case == "output_not_mp4":
        kw["output"] = tmp_path / "out.avi"
    elif case == "missing_checkpoint":
        kw["checkpoint"] = str(tmp_path / "no_ckpt")
    with pytest.raises((InputError, FileNotFoundError), match=match.replace(".", r"\.")):
        generate(tiny_cfg, **kw)


def test_cli_error_exit_code(tmp_path, capsys):
    assert main(["--reference", str(tmp_path / "x.png"), "--audio", str(tmp_path / "a.wav"),
                 "--output", str(tmp_path / "o.mp4")]) == 2
    assert "x.png: reference image not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --kps and --driving-video are exclusive
        main(["--reference", "r.png", "--audio", "a.wav", "--output", "o.mp4", "--kps", "k.npy",
              "--driving-video", "d.mp4"])


def test_kps_file_formats(tmp_path):
    arr = np.arange(5 * 5 * 2, dtype=np.float64).reshape(5, 5, 2)
    np.save(tmp_path / "k.npy", arr)
    (tmp_path / "k.json").write_text(json.dumps(arr.tolist()))
    import torch

    torch.save([torch.as_tensor(a) for a in arr], tmp_path / "k.pth")
    for name in ("k.npy", "k.json", "k.pth"):
        data, size = load_kps_file(tmp_path / name, 512)
        np.testing.assert_array_equal(data, arr)
        assert size == 512
