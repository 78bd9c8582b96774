"""Video and audio I/O shared by every stage (PyAV for video, PyAV/ffmpeg for audio).

Conventions: frames are ``uint8`` arrays ``(F, H, W, 3)`` in RGB; audio is ``float32`` mono in [-1, 1].
Every function raises :class:`MediaError` naming the file and the problem instead of a bare codec error.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np


class MediaError(RuntimeError):
    """A file could not be probed, decoded or encoded; the message names the file."""


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration_s: float
    fps: float
    width: int
    height: int
    num_frames: int  # container's count, or duration x fps when the container does not say
    has_audio: bool
    audio_sample_rate: int
    audio_channels: int


def _name(src: str | Path | bytes | BinaryIO) -> str:
    return "<bytes>" if isinstance(src, (bytes, bytearray, io.IOBase)) else str(src)


def _open(src: str | Path | bytes | BinaryIO):
    try:
        return av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{_name(src)}: cannot open as media ({exc})") from exc


def probe(src: str | Path | bytes) -> MediaInfo:
    """Stream facts without decoding. Raises MediaError for non-media or video-less files."""
    with _open(src) as c:
        if not c.streams.video:
            raise MediaError(f"{_name(src)}: no video stream")
        v = c.streams.video[0]
        fps = float(v.average_rate or v.guessed_rate or 0)
        if fps <= 0:
            raise MediaError(f"{_name(src)}: cannot determine frame rate")
        duration = 0.0
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        elif c.duration:
            duration = c.duration / av.time_base
        frames = v.frames or int(round(duration * fps))
        a = c.streams.audio[0] if c.streams.audio else None
        return MediaInfo(
            path=_name(src),
            duration_s=duration,
            fps=fps,
            width=v.codec_context.width,
            height=v.codec_context.height,
            num_frames=frames,
            has_audio=a is not None,
            audio_sample_rate=a.codec_context.sample_rate if a else 0,
            audio_channels=a.codec_context.channels if a else 0,
        )


def read_frames(src: str | Path | bytes, fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """Decode all video frames as RGB uint8 ``(F, H, W, 3)``.

    With ``fps`` the frames are resampled to that constant rate by nearest timestamp (frame ``i`` is the
    source frame shown at ``i / fps``), which is what a player would display.
    """
    frames: list[np.ndarray] = []
    times: list[float] = []
    with _open(src) as c:
        if not c.streams.video:
            raise MediaError(f"{_name(src)}: no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in c.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate))
                if max_frames and fps is None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            if not frames:
                raise MediaError(f"{_name(src)}: cannot decode video ({exc})") from exc
            # A truncated tail: keep what decoded, the caller sees fewer frames than probed.
    if not frames:
        raise MediaError(f"{_name(src)}: no decodable video frames")
    video = np.stack(frames)
    if fps is None:
        return video
    t = np.asarray(times) - times[0]
    end = t[-1] + (t[-1] - t[-2] if len(t) > 1 else 1.0 / fps)
    n = int(np.floor(end * fps + 1e-6))
    if max_frames:
        n = min(n, max_frames)
    wanted = np.arange(n) / fps
    idx = np.clip(np.searchsorted(t, wanted + 1e-6, side="right") - 1, 0, len(t) - 1)
    return video[idx]


def read_audio(src: str | Path | bytes, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream, downmix to mono and resample; float32 in [-1, 1]."""
    with _open(src) as c:
        if not c.streams.audio:
            raise MediaError(f"{_name(src)}: no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in c.decode(c.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"{_name(src)}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise MediaError(f"{_name(src)}: audio stream is empty")
    return np.concatenate(chunks).astype(np.float32)


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("frames is empty")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"h264/yuv420p needs even frame sizes, got {w}x{h}")


def _encode(out: Path, frames: np.ndarray, fps: float, crf: int, audio_file: Path | None = None,
            preset: str = "medium") -> None:
    """Encode with the system ffmpeg (raw RGB piped in), optionally muxing ``audio_file`` as AAC.

    Why the ffmpeg CLI and not PyAV's encoder: the libx264 bundled in the PyAV 18 wheel gave different
    bytes for identical input in about one run in five (even single-threaded); Debian's ffmpeg/libx264
    is byte-stable. Determinism matters: the sample data and the shard checksums must be reproducible.
    """
    _check_frames(frames)
    h, w = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    cmd = [_ffmpeg(), "-y", "-nostdin", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{rate.numerator}/{rate.denominator}",
           "-i", "pipe:0"]
    if audio_file is not None:
        cmd += ["-i", str(audio_file)]
    cmd += ["-map", "0:v:0", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-threads", "1",
            "-pix_fmt", "yuv420p"]
    if audio_file is not None:
        # The video decides the length: the audio is padded with silence or cut to len(frames) / fps.
        cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-af", "apad",
                "-t", f"{len(frames) / float(rate):.6f}"]
    cmd += ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-movflags", "+faststart", "-f", "mp4", str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for f in frames:
            proc.stdin.write(np.ascontiguousarray(f).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its stderr says why
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise MediaError(f"{out}: ffmpeg encode failed: {err.strip()[-500:]}")


def encode_mp4_bytes(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "medium") -> bytes:
    """h264 mp4 (no audio) as bytes, e.g. for a WebDataset sample. Byte-identical for identical input."""
    with tempfile.TemporaryDirectory(prefix="vexpress-enc-") as d:
        out = Path(d) / "video.mp4"
        _encode(out, frames, fps, crf, preset=preset)
        return out.read_bytes()


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """PCM16 mono wav."""
    import soundfile as sf

    path = Path(path)
    sf.write(str(path), np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
    return path


def wav_bytes(audio: np.ndarray, sample_rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: str | Path | np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Write an h264 mp4 (faststart); mux ``audio`` (a file or a mono array) as AAC when given.

    The video keeps exactly ``len(frames)`` frames at ``fps``; the audio is padded or cut to the video's
    duration. Output is byte-identical for identical input; the file appears atomically (temp + rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vexpress-enc-", dir=path.parent) as d:
        audio_file = None
        if isinstance(audio, np.ndarray):
            audio_file = write_wav(Path(d) / "audio.wav", audio, sample_rate)
        elif audio is not None:
            audio_file = Path(audio)
            if not audio_file.is_file():
                raise MediaError(f"{audio_file}: audio file not found")
        tmp = Path(d) / "out.mp4"
        _encode(tmp, frames, fps, crf, audio_file, preset)
        tmp.replace(path)
    return path


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise MediaError("ffmpeg not found on PATH (run `make setup`, which installs it)")
    return exe


def ffprobe_streams(path: str | Path) -> list[dict]:
    """ffprobe's view of the streams (used by tests and sanity checks)."""
    exe = shutil.which("ffprobe")
    if not exe:
        raise MediaError("ffprobe not found on PATH")
    proc = subprocess.run([exe, "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MediaError(f"{path}: ffprobe failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout).get("streams", [])
