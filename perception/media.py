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
    duration_s: float  # of the video stream itself (its own duration, else its last frame's end)
    fps: float
    width: int  # as displayed (after the rotation below)
    height: int
    num_frames: int  # container's count, or duration x fps when the container does not say
    has_audio: bool
    audio_sample_rate: int
    audio_channels: int
    start_s: float = 0.0  # container time of the first video frame: time 0 of frames and audio
    rotation: int = 0  # degrees counter-clockwise the decoded frames are turned to be upright (display matrix)


def _name(src: str | Path | bytes | BinaryIO) -> str:
    return "<bytes>" if isinstance(src, (bytes, bytearray, io.IOBase)) else str(src)


def _open(src: str | Path | bytes | BinaryIO):
    try:
        return av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{_name(src)}: cannot open as media ({exc})") from exc


def _origin(stream) -> float:
    """Container time of a stream's first frame (0 when the container does not say)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that make a decoded frame upright: what ffmpeg's autorotate (and a
    player) does with a display matrix (phones store portrait video as landscape frames plus a rotation)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(rotation / 90)) % 4


def _upright(frame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _video_end(container, stream, fps: float) -> float | None:
    """End time of the last video packet (demuxing only, nothing decoded): the video's own length in containers
    that store no per-stream duration (Matroska/WebM), where the container's duration is its longest stream's."""
    end = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
            if not packet.duration:
                t += 1.0 / fps
            end = t if end is None else max(end, t)
    except av.error.FFmpegError:
        pass  # a damaged tail: the packets read so far tell where the readable video ends
    return end


def probe(src: str | Path | bytes) -> MediaInfo:
    """Stream facts (the first frame is decoded for its rotation). Raises MediaError for non-media or video-less
    files."""
    with _open(src) as c:
        if not c.streams.video:
            raise MediaError(f"{_name(src)}: no video stream")
        v = c.streams.video[0]
        fps = float(v.average_rate or v.guessed_rate or 0)
        if fps <= 0:
            raise MediaError(f"{_name(src)}: cannot determine frame rate")
        start = _origin(v)
        turns = 0
        try:
            turns = _quarter_turns(next(c.decode(v)))
        except (av.error.FFmpegError, StopIteration, OSError, ValueError):
            pass  # undecodable: decoding the clips reports it
        duration = 0.0
        if v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        else:
            end = _video_end(c, v, fps)
            if end is not None:
                duration = max(0.0, end - start)
            elif c.duration:
                duration = c.duration / av.time_base
        frames = v.frames or int(round(duration * fps))
        a = c.streams.audio[0] if c.streams.audio else None
        w, h = v.codec_context.width, v.codec_context.height
        return MediaInfo(
            path=_name(src),
            duration_s=duration,
            fps=fps,
            width=h if turns % 2 else w,
            height=w if turns % 2 else h,
            num_frames=frames,
            has_audio=a is not None,
            audio_sample_rate=a.codec_context.sample_rate if a else 0,
            audio_channels=a.codec_context.channels if a else 0,
            start_s=start,
            rotation=90 * turns,
        )


def read_frames(src: str | Path | bytes, fps: float | None = None, max_frames: int | None = None,
                start_s: float = 0.0, num_frames: int | None = None) -> np.ndarray:
    """Decode video frames as upright RGB uint8 ``(F, H, W, 3)`` (the one video decoder of the project).

    Without ``fps``: every frame as stored (at most ``max_frames``). With ``fps``: frame ``i`` is the source frame
    shown at ``start_s + i / fps`` (times from the first frame, ``MediaInfo.start_s``), by nearest preceding
    timestamp as a player shows it, for ``i < num_frames`` (or ``max_frames``) while the video lasts; a
    ``start_s > 0`` seeks to the keyframe before it. A truncated file gives fewer frames; a range after the end of
    the video an empty array. Raises MediaError when nothing at all decodes.
    """
    limit = num_frames if num_frames is not None else max_frames
    out: list[np.ndarray] = []
    decoded = 0
    with _open(src) as c:
        if not c.streams.video:
            raise MediaError(f"{_name(src)}: no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or fps or 25.0)
        origin = _origin(stream) if stream.start_time is not None else None
        try:
            if fps is not None and start_s > 0:
                c.seek(int(((origin or 0.0) + start_s) / stream.time_base), stream=stream, backward=True,
                       any_frame=False)
            prev, prev_t, prev_rgb, interval = None, None, None, None
            i = 0
            for frame in c.decode(stream):
                decoded += 1
                if fps is None:
                    out.append(_upright(frame))
                    if limit and len(out) >= limit:
                        break
                    continue
                if frame.time is not None:
                    origin = float(frame.time) if origin is None else origin
                    t = float(frame.time) - origin
                else:
                    t = prev_t + (interval or 1.0 / rate) if prev_t is not None else 0.0
                while (limit is None or i < limit) and start_s + i / fps + 1e-6 < t:
                    if prev is None:  # the first frame is later than the wanted time: show it
                        prev, prev_rgb = frame, None
                    if prev_rgb is None:
                        prev_rgb = _upright(prev)
                    out.append(prev_rgb)
                    i += 1
                if limit is not None and i >= limit:
                    break
                if prev_t is not None and t > prev_t:
                    interval = t - prev_t
                prev, prev_t, prev_rgb = frame, t, None
            if fps is not None and prev is not None:
                # After the last decoded frame: show it for its display duration.
                end = prev_t + (interval or 1.0 / rate)
                while (limit is None or i < limit) and start_s + i / fps < end - 1e-6:
                    prev_rgb = prev_rgb if prev_rgb is not None else _upright(prev)
                    out.append(prev_rgb)
                    i += 1
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            if not decoded:
                raise MediaError(f"{_name(src)}: cannot decode video at {start_s:.2f}s ({exc})") from exc
            # A truncated tail: keep what decoded, the caller sees fewer frames than probed.
        if not decoded:
            raise MediaError(f"{_name(src)}: no decodable video frames")
        if not out:
            w, h = stream.codec_context.width, stream.codec_context.height
            return np.zeros((0, h, w, 3), np.uint8)
    return np.stack(out)


def read_audio(src: str | Path | bytes, sample_rate: int = 16000, start_s: float | None = None) -> np.ndarray:
    """Decode the first audio stream, downmix to mono and resample; float32 in [-1, 1].

    The samples are placed by their timestamps (stream start times, edit lists, encoder priming): sample 0 is at
    container time ``start_s``, by default the first video frame's (``MediaInfo.start_s``) when the file has video,
    so frame ``i`` at ``fps`` and sample ``round(i / fps * sample_rate)`` are shown together, as a player does.
    Audio that starts later is preceded by silence, audio that starts earlier is cut. Audio-only files start at
    their first sample.
    """
    with _open(src) as c:
        if not c.streams.audio:
            raise MediaError(f"{_name(src)}: no audio stream")
        stream = c.streams.audio[0]
        if start_s is None and c.streams.video:
            start_s = _origin(c.streams.video[0])
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_t, first = None, True
        try:
            for frame in c.decode(stream):
                if first:  # where the first decoded sample is shown (None: the container does not say)
                    first_t, first = (float(frame.time) if frame.time is not None else None), False
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"{_name(src)}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise MediaError(f"{_name(src)}: audio stream is empty")
    audio = np.concatenate(chunks).astype(np.float32)
    if start_s is not None and first_t is not None:
        shift = int(round((first_t - start_s) * sample_rate))
        audio = np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0 else audio[-shift:]
    return audio


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
