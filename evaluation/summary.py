"""The demo summary: does a generated video show the subject, follow its V-Kps and move its mouth with the audio?

Measured on one held-out clip with the evaluation's own face backend (YuNet) and identity embedder (SFace):

- ``face_found_rate``: fraction of generated frames in which exactly one face is found;
- ``kpsdis_px``: KpsDis (``evaluation.kpsdis``) against the clip's own keypoints, in pixels of a 512² frame;
- ``facesim_ref`` / ``facesim_other``: mean SFace cosine of the generated faces to the reference image and to
  a reference image of another identity;
- ``mouth_audio_corr``: Pearson correlation between the mouth opening measured in the frames
  (:func:`mouth_opening_measure`) and the audio's loudness envelope (``preprocessing.loudness``);
- ``mouth_amplitude``: the spread (90th minus 10th percentile) of that measured opening.

Frames are upscaled to 512² (bicubic) before detection, as KpsDis is defined at that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from evaluation.facesim import similarities
from evaluation.kpsdis import kps_distance

FRAME = 512


def upscale(frames: np.ndarray, size: int = FRAME) -> np.ndarray:
    """uint8 (F, h, w, 3) -> (F, size, size, 3), bicubic."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in frames])


def detect_single_faces(backend: Any, frames: np.ndarray) -> list[Any | None]:
    """The face of every frame that shows exactly one face, else ``None``."""
    out = []
    for frame in frames:
        faces = backend.detect(frame)
        out.append(faces[0] if len(faces) == 1 else None)
    return out


def _luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def mouth_opening_measure(frame: np.ndarray, kps: np.ndarray) -> float:
    """How dark the mouth region is relative to the face: 0 when closed, larger as the mouth opens.

    Region: from just above the mouth-corner line to 0.75 mouth widths below it, 0.45 widths to each side
    of the centre (where an opening mouth shows its cavity). Darkness: the mean of ``max(0, L_face - L)``
    over the region divided by ``L_face``, where ``L_face`` is the median luminance of a patch below the nose.
    """
    kps = np.asarray(kps, np.float64)
    left, right, nose = kps[3], kps[4], kps[2]
    centre = (left + right) / 2
    width = max(float(np.linalg.norm(right - left)), 2.0)
    h, w = frame.shape[:2]

    def box(x0, y0, x1, y1):
        x0, x1 = int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 1, w))
        y0, y1 = int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 1, h))
        return _luminance(frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])

    mouth = box(centre[0] - 0.45 * width, centre[1] - 0.05 * width, centre[0] + 0.45 * width,
                centre[1] + 0.75 * width)
    cheek = box(nose[0] - 0.3 * width, nose[1] - 0.3 * width, nose[0] + 0.3 * width, nose[1] + 0.1 * width)
    reference = max(float(np.median(cheek)), 1.0)
    return float(np.maximum(reference - mouth, 0).mean() / reference)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@dataclass
class VideoSummary:
    face_found_rate: float
    kpsdis_px: float
    facesim_ref: float
    facesim_other: float
    mouth_audio_corr: float
    mouth_amplitude: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _embedding(embedder: Any, backend: Any, image: np.ndarray, what: str) -> np.ndarray:
    faces = backend.detect(image)
    if not faces:
        raise ValueError(f"summary: no face found in the {what} image")
    e = np.asarray(embedder.embed(image, faces[0]), np.float64).reshape(-1)
    return e / np.linalg.norm(e)


def summarize_video(frames: np.ndarray, target_kps: np.ndarray, envelope: np.ndarray, reference: np.ndarray,
                    other_reference: np.ndarray, backend: Any, embedder: Any) -> VideoSummary:
    """``frames`` uint8 (F, h, w, 3); ``target_kps`` (F, 5, 2) in pixels of a 512² frame; ``envelope`` (F,)
    the audio's mouth opening (``preprocessing.loudness.mouth_opening``); the references are RGB images."""
    big = upscale(np.asarray(frames))
    faces = detect_single_faces(backend, big)
    found = np.array([f is not None for f in faces])
    kpsdis = kps_distance([None if f is None else f.kps for f in faces], target_kps, big.shape[1:3], FRAME)
    sims_ref, _ = similarities(embedder, _embedding(embedder, backend, upscale(reference[None])[0], "reference"),
                               big, faces)
    sims_other, _ = similarities(embedder, _embedding(embedder, backend, upscale(other_reference[None])[0],
                                                      "other identity's reference"), big, faces)
    opening = np.array([mouth_opening_measure(frame, face.kps if face is not None else kps)
                        for frame, face, kps in zip(big, faces, target_kps)])
    amplitude = float(np.percentile(opening, 90) - np.percentile(opening, 10))
    return VideoSummary(
        face_found_rate=float(found.mean()), kpsdis_px=kpsdis.value,
        facesim_ref=float(np.nanmean(sims_ref)) if found.any() else float("nan"),
        facesim_other=float(np.nanmean(sims_other)) if found.any() else float("nan"),
        mouth_audio_corr=pearson(opening, envelope[:len(opening)]), mouth_amplitude=amplitude)


# ------------------------------------------------------------------------------------------------ the demo CLI
SUMMARY_KEYS = ("face_found_rate", "kpsdis_px", "kpsdis_copy_baseline_px", "facesim_ref", "facesim_other",
                "mouth_audio_corr", "mouth_audio_corr_w0", "mouth_audio_corr_ground_truth", "mouth_amplitude",
                "mouth_amplitude_w0")


def heldout_clip(test_shards: str) -> dict:
    """The first sample of a test shard folder: frames, keypoints (512² pixels), audio and its features."""
    from preprocessing.shards import open_dataset

    sample = next(iter(open_dataset(test_shards)))
    crop = float(sample["meta"].get("crop_size", 512))
    return {"frames": sample["frames"], "kps512": sample["kps"] * (FRAME / crop), "crop": crop,
            "audio": sample.get("audio"), "features": sample.get("audio_features"), "key": sample["__key__"]}


def summarize_demo(cfg: Any, checkpoint: str, test_shards: str, generated: np.ndarray, other_reference: np.ndarray,
                   backend: Any = None, embedder: Any = None) -> dict[str, float]:
    """The demo's ``summary.json`` values for ``generated`` (the held-out clip made with the default settings):
    its :class:`VideoSummary`, the copy baseline's KpsDis, the mouth correlation with audio attention weight 0
    and that of the ground truth itself (the ceiling of the measure)."""
    import torch

    from evaluation.faces import face_setup
    from model.inference_config import sampling_kwargs
    from model.pipeline_loading import load_pipeline
    from perception.face_id import SFaceEmbedder
    from preprocessing.loudness import mouth_opening

    if backend is None:  # the detector evaluation would use on this test set (its recorded one by default)
        from evaluation.testset import recorded_face_backend

        backend = face_setup(cfg.eval, *recorded_face_backend(test_shards), with_embedder=False).backend
    embedder = embedder or SFaceEmbedder()
    clip = heldout_clip(test_shards)
    n = min(len(generated), len(clip["frames"]))
    size = cfg.model.resolution
    gt = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip["frames"][:n]])
    reference, kps512 = gt[0], clip["kps512"][:n]
    envelope = mouth_opening(clip["audio"], 16000, cfg.inference.fps, n)

    def summarize(frames: np.ndarray) -> VideoSummary:
        return summarize_video(frames[:n], kps512, envelope, reference, other_reference, backend, embedder)

    pipe = load_pipeline(cfg, checkpoint)
    silent = pipe(reference, kps512[:, :3] * (size / FRAME), audio_features=torch.from_numpy(
        np.asarray(clip["features"], np.float32)), num_frames=n, size=size,
        **{**sampling_kwargs(cfg.inference), "audio_attention_weight": 0.0, "progress": False}).frames
    main, w0 = summarize(generated), summarize(silent)
    copy = summarize(np.repeat(reference[None], n, axis=0))
    truth = summarize(gt)
    out = main.as_dict()
    out.update(kpsdis_copy_baseline_px=copy.kpsdis_px, mouth_audio_corr_w0=w0.mouth_audio_corr,
               mouth_amplitude_w0=w0.mouth_amplitude, mouth_audio_corr_ground_truth=truth.mouth_audio_corr,
               kpsdis_ground_truth_px=truth.kpsdis_px, frames=n)
    return out


CHECKS = (  # what a learning demo model shows (the README's "what the demo proves")
    ("face_found_rate", lambda s: s["face_found_rate"] >= 0.9, ">= 0.9"),
    ("kpsdis_px", lambda s: s["kpsdis_px"] <= 0.5 * s["kpsdis_copy_baseline_px"], "<= 0.5 x copy baseline"),
    ("facesim_ref", lambda s: s["facesim_ref"] >= s["facesim_other"] + 0.1, ">= facesim_other + 0.1"),
    ("mouth_audio_corr", lambda s: s["mouth_audio_corr"] >= max(0.3, s["mouth_audio_corr_w0"] + 0.2),
     ">= 0.3 and >= w0 + 0.2"),
)


def format_summary(summary: dict) -> str:
    """The summary as a table: metric, value, and for the checked ones the target and whether it is met."""
    checks = {name: (fn, target) for name, fn, target in CHECKS}
    lines = [f"{'metric':<32} {'value':>10}  target", "-" * 72]
    for key, value in summary.items():
        if isinstance(value, dict):
            continue
        shown = f"{value:10.3f}" if isinstance(value, float) else f"{'n/a' if value is None else value!s:>10}"
        note = ""
        if key in checks:
            fn, target = checks[key]
            try:
                met = bool(fn(summary))
            except (KeyError, TypeError):
                met = False
            note = f"{target}  {'ok' if met else 'NOT MET'}"
        lines.append(f"{key:<32} {shown}  {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import logging
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m evaluation.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="preset name (cpu/stage3) or YAML path")
    ap.add_argument("--checkpoint", required=True, help="export folder of the trained model")
    ap.add_argument("--test-shards", required=True, help="shard folder whose first sample is the held-out clip")
    ap.add_argument("--generated", required=True, help="mp4 of the held-out clip made with the default settings")
    ap.add_argument("--other-reference", required=True, help="image of another identity (facesim_other)")
    ap.add_argument("--output", required=True, help="JSON file to write")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. inference.num_inference_steps=10")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from PIL import Image

    from infra.cli import run_cli
    from infra.config_tree import load
    from perception.media import MediaError, read_frames

    def run() -> int:
        cfg = load(args.config, args.overrides)
        generated = read_frames(args.generated)
        other = np.asarray(Image.open(args.other_reference).convert("RGB"))
        other = cv2.resize(other, (cfg.model.resolution,) * 2, interpolation=cv2.INTER_AREA)
        summary = summarize_demo(cfg, args.checkpoint, args.test_shards, generated, other)
        strict = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
        Path(args.output).write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")
        print(format_summary(summary))
        return 0

    return run_cli("evaluation.summary", run, user_errors=(MediaError,))


if __name__ == "__main__":
    raise SystemExit(main())
