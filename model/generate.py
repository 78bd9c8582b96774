"""``python -m model.generate``: a talking-head mp4 from a reference image, audio and V-Kps / a driving video.

    python -m model.generate --reference ref.jpg --audio speech.wav --output out.mp4 \
        [--kps kps.npy | --driving-video drive.mp4] [--checkpoint runs/tiny/stage3] [--config tiny/stage3] \
        [inference.num_inference_steps=10 inference.retarget_strategy=naive_retarget ...]

``--checkpoint``: a stage output folder (its latest export), a step folder, an export folder or an official
five-file folder (``model.checkpoint_paths``). The config is the one saved beside it unless ``--config`` is given.

The video has exactly round(audio seconds x fps) frames at ``inference.fps`` (unchanged) and the input audio
muxed in (h264 + AAC). Without ``--kps``/``--driving-video`` the reference face is held (fix_face with the
keypoints detected on the reference image).

Keypoints: a kps file's sequence is linearly interpolated to the frame count (its coordinates are pixels of a
square ``inference.kps_image_size`` frame unless its JSON says ``image_size``). A driving video is read at the
output fps, cut to the frame count when longer (frame i drives frame i) and stretched by the same linear
interpolation when shorter; frames without a face take their neighbours' keypoints. Then
``inference.retarget_strategy`` maps the sequence onto the reference face (``model.retarget``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from model.inference_config import sampling_kwargs
from model.retarget import retarget

log = logging.getLogger("model.generate")

AUDIO_SAMPLE_RATE = 16000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
KPS_SUFFIXES = {".npy", ".json", ".pt", ".pth"}


class InputError(ValueError):
    """A user input file is missing, unsupported or unusable; the message names the file."""


def num_output_frames(audio_samples: int, fps: float, sample_rate: int = AUDIO_SAMPLE_RATE) -> int:
    """round(audio seconds x fps), halves rounded up (no banker's rounding)."""
    return int(math.floor(audio_samples / sample_rate * fps + 0.5))


def _require_file(path: str | Path, what: str, suffixes: set[str] | None = None) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise InputError(f"{p}: unsupported {what} type {p.suffix!r} (use one of {sorted(suffixes)})")
    return p


def load_reference_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    p = _require_file(path, "reference image", IMAGE_SUFFIXES)
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{p}: cannot read the reference image ({exc})") from exc


def load_audio(path: str | Path) -> np.ndarray:
    """16 kHz mono float32 (wav/mp3/m4a/... or the audio track of a video)."""
    from preprocessing.media import MediaError, read_audio

    p = _require_file(path, "audio file")
    try:
        audio = read_audio(p, sample_rate=AUDIO_SAMPLE_RATE)
    except MediaError as exc:
        raise InputError(str(exc)) from exc
    if len(audio) == 0:
        raise InputError(f"{p}: audio is empty")
    return audio


def load_kps_file(path: str | Path, default_image_size: int) -> tuple[np.ndarray, int]:
    """Keypoints (F, K>=3, 2) and the square frame size their pixel coordinates refer to.

    ``.npy``: an array (F, K, 2). ``.json``: a list (F, K, 2) or ``{"kps": [...], "image_size": 512}``.
    ``.pt``/``.pth``: a tensor or list of tensors (F, K, 2), e.g. the official ``kps.pth`` (loaded with
    ``weights_only=True``; a pickle of numpy arrays must be converted to .npy first).
    """
    p = _require_file(path, "keypoint file", KPS_SUFFIXES)
    size = default_image_size
    try:
        if p.suffix.lower() == ".npy":
            data = np.load(p, allow_pickle=False)
        elif p.suffix.lower() == ".json":
            obj = json.loads(p.read_text())
            if isinstance(obj, dict):
                size = int(obj.get("image_size", size))
                obj = obj["kps"]
            data = np.asarray(obj, dtype=np.float64)
        else:
            import torch

            obj = torch.load(p, map_location="cpu", weights_only=True)
            data = (torch.stack([torch.as_tensor(o) for o in obj]) if isinstance(obj, (list, tuple))
                    else torch.as_tensor(obj)).double().numpy()
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a message naming the file
        raise InputError(f"{p}: cannot read keypoints ({type(exc).__name__}: {exc})") from exc
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 3 or data.shape[-1] != 2 or data.shape[1] < 3 or len(data) == 0:
        raise InputError(f"{p}: keypoints must have shape (frames, >=3, 2), got {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{p}: keypoints contain NaN/inf")
    return data, size


def _best_face(faces):
    return max(faces, key=lambda f: float(f.score)) if faces else None


def detect_reference_kps(image: np.ndarray, backend, path: str | Path) -> np.ndarray:
    """5-point keypoints (5, 2) of the most confident face, in the image's pixels."""
    face = _best_face(backend.detect(image))
    if face is None:
        raise InputError(f"{path}: no face detected in the reference image")
    return np.asarray(face.kps, dtype=np.float64)


def driving_video_kps(path: str | Path, fps: float, max_frames: int, backend) -> tuple[np.ndarray, tuple[int, int]]:
    """Per-frame keypoints (n, 5, 2) of a driving video read at ``fps`` (at most ``max_frames``).

    Frames without a detected face take the keypoints of the nearest frames (linear in between).
    """
    from tqdm.auto import tqdm

    from preprocessing.media import MediaError, read_frames

    p = _require_file(path, "driving video")
    try:
        frames = read_frames(p, fps=fps, max_frames=max_frames)
    except MediaError as exc:
        raise InputError(str(exc)) from exc
    kps = np.full((len(frames), 5, 2), np.nan)
    for i, frame in enumerate(tqdm(frames, desc="driving-video faces", leave=False)):
        face = _best_face(backend.detect(frame))
        if face is not None:
            kps[i] = np.asarray(face.kps, dtype=np.float64)[:5]
    found = np.flatnonzero(np.isfinite(kps[:, 0, 0]))
    if len(found) == 0:
        raise InputError(f"{p}: no face detected in any frame of the driving video")
    if len(found) < len(kps):
        log.warning("%s: no face in %d of %d frames; filled from neighbours", p, len(kps) - len(found), len(kps))
        t = np.arange(len(kps))
        for j in range(5):
            for c in range(2):
                kps[:, j, c] = np.interp(t, found, kps[found, j, c])
    return kps, frames.shape[1:3]


def _scale_kps(kps: np.ndarray, from_hw: tuple[int, int], size: int) -> np.ndarray:
    """Pixel coordinates of an H x W frame -> pixels of the size x size model frame (plain resize)."""
    h, w = from_hw
    return kps * np.array([size / w, size / h])


def make_backend(cfg):
    """The configured face detector (insightface takes its model folder from ``preprocess.insightface_*``)."""
    from preprocessing.faces import make_face_backend

    opts = {}
    if cfg.inference.face_backend == "insightface":
        opts = {"pack": cfg.preprocess.insightface_pack}
        if cfg.preprocess.insightface_root:
            opts["root"] = cfg.preprocess.insightface_root
    return make_face_backend(cfg.inference.face_backend, **opts)


def build_kps_sequence(cfg, reference_image: np.ndarray, reference_path, num_frames: int, size: int,
                       kps_path=None, driving_video=None, backend=None) -> np.ndarray:
    """The retargeted (F, 3, 2) keypoints in pixels of the model frame."""
    if kps_path and driving_video:
        raise InputError("give either --kps or --driving-video, not both")
    inf = cfg.inference
    driving = None
    if kps_path:  # read (and validate) the file before any model work
        data, image_size = load_kps_file(kps_path, inf.kps_image_size)
        driving = _scale_kps(data[:, :3], (image_size, image_size), size)
    if backend is None:
        backend = make_backend(cfg)
    if driving_video:
        data, hw = driving_video_kps(driving_video, inf.fps, num_frames, backend)
        driving = _scale_kps(data[:, :3], hw, size)
    ref_kps = _scale_kps(detect_reference_kps(reference_image, backend, reference_path)[:3],
                         reference_image.shape[:2], size)
    strategy = inf.retarget_strategy if driving is not None else "fix_face"
    return retarget(strategy, ref_kps, driving, num_frames)


def generate(cfg, reference: str | Path, audio_path: str | Path, output: str | Path, kps_path=None,
             driving_video=None, checkpoint: str | None = None, pipeline=None, backend=None) -> Path:
    """Run the whole CLI job; returns the written mp4 path."""
    from model.pipeline_loading import load_pipeline
    from preprocessing.media import write_video

    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise InputError(f"{output}: the output must be an .mp4 file")
    if checkpoint:
        from model.checkpoint_paths import resolve_checkpoint

        log.info("checkpoint: %s", resolve_checkpoint(checkpoint).describe())  # fails before any model work
    image = load_reference_image(reference)
    audio = load_audio(audio_path)
    num_frames = num_output_frames(len(audio), cfg.inference.fps)
    if num_frames < 1:
        raise InputError(f"{audio_path}: audio too short for one frame at {cfg.inference.fps} fps")
    size = cfg.model.resolution
    kps = build_kps_sequence(cfg, image, reference, num_frames, size, kps_path, driving_video, backend)
    pipe = pipeline or load_pipeline(cfg, checkpoint)
    inf = cfg.inference
    log.info("generating %d frames at %g fps (%d x %d), preset %s", num_frames, inf.fps, size, size, inf.preset)
    out = pipe(image, kps, audio, num_frames=num_frames, size=size, **sampling_kwargs(inf))
    write_video(output, out.frames, inf.fps, audio=audio, sample_rate=AUDIO_SAMPLE_RATE)
    log.info("wrote %s (%d frames, %d denoiser forwards)", output, len(out.frames), out.stats.denoiser_calls)
    return output


def parse_args(argv=None) -> argparse.Namespace:
    from infra.cli import Parser

    ap = Parser("python -m model.generate", description=__doc__.split("\n\n")[0],
                sections=("inference", "model", "preprocess"))
    ap.add_argument("--reference", required=True, help="reference image (jpg/png/...)")
    ap.add_argument("--audio", required=True, help="audio file (wav/mp3/m4a/..., resampled to 16 kHz mono)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--kps", help="V-Kps sequence (.npy/.json/.pt (frames, >=3, 2) pixels)")
    src.add_argument("--driving-video", help="video whose face keypoints drive the head pose")
    ap.add_argument("--output", required=True, help="output .mp4")
    ap.add_argument("--config", default=None, help="preset name (tiny/stage3) or YAML path (default: the config "
                    "saved beside --checkpoint, else tiny/stage3; sd15/stage3 for an official five-file folder)")
    ap.add_argument("--checkpoint", default=None, help="stage output, step, export or official five-file folder "
                    "(default: model.pretrained.vexpress)")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. inference.num_inference_steps=10")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from infra.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_cli("generate", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from infra.config_tree import load_for_checkpoint

    cfg, _ = load_for_checkpoint(args.config, args.checkpoint, args.overrides)
    print(generate(cfg, args.reference, args.audio, args.output, args.kps, args.driving_video, args.checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
