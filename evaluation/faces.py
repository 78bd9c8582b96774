"""One face per frame for the face-based metrics (KpsDis, ΔFaceSim, SyncNet tracks, LatentSync FVD crops).

Detection runs once per video through a face backend from ``perception.faces`` (``make_face_backend``;
``.detect(rgb_frame) -> list[Face(box, score, kps (5, 2))]``); every metric then reuses the result.
When a frame shows several faces the most confident one is kept (our test clips are single-face crops);
a frame with none is ``None`` and each metric counts it.

One detector end to end: the target V-Kps of a test set were detected by the backend its preprocessing
used (recorded in the shards' metadata), so by default evaluation detects with that same backend
(:func:`resolve_face_backend`), and the identity embedder follows it (ArcFace with insightface packs,
SFace with YuNet; :func:`make_embedder`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class FaceLike(Protocol):
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    score: float
    kps: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner


def best_face(faces: list[FaceLike]) -> FaceLike | None:
    return max(faces, key=lambda f: float(f.score)) if faces else None


def detect_per_frame(backend: Any, frames: np.ndarray) -> list[FaceLike | None]:
    """The most confident face of every RGB frame (``None`` where none is found)."""
    if hasattr(backend, "detect_batch"):
        per_frame = backend.detect_batch(list(frames))
    else:
        per_frame = [backend.detect(f) for f in frames]
    return [best_face(list(faces)) for faces in per_frame]


def make_backend(name: str = "yunet", **kwargs) -> Any:
    """A face backend by name (``yunet`` offline default, ``insightface``); see ``perception.faces``."""
    from perception.faces import make_face_backend

    return make_face_backend(name, **kwargs)


# ------------------------------------------------------------------------------------------- one detector


@dataclass
class FaceSetup:
    """The detector and identity embedder one test set is scored with, and where the choice came from."""

    backend_name: str  # "yunet" | "insightface:<pack>"
    backend: Any
    recorded: str | None  # the backend the test set's keypoints were made with (None: unknown, a raw folder)
    root: str = ""  # insightface root when backend_name is insightface
    _embedder: Any = None
    _embedder_factory: Any = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None and self._embedder_factory is not None:
            self._embedder = self._embedder_factory()
        return self._embedder

    @property
    def embedder_name(self) -> str:
        return getattr(self.embedder, "name", type(self.embedder).__name__) if self.embedder is not None else "-"

    @property
    def mismatch(self) -> bool:
        """True when KpsDis compares keypoints of two different detectors."""
        return self.recorded is not None and self.recorded != self.backend_name


def _pack_missing(root: str, pack: str) -> str | None:
    from perception.faces import FaceModelError, find_pack_model

    try:
        find_pack_model(root, pack, "detection")
        return None
    except FaceModelError as exc:
        return str(exc)


def resolve_face_backend(cfg, recorded: str | None, recorded_root: str | None = None) -> tuple[str, str]:
    """``(backend_name, insightface_root)`` for one test set, by ``eval.face_backend``:

    ``auto`` uses the backend recorded in the test set's shards (``yunet`` for a raw folder of videos);
    ``yunet`` / ``insightface`` force one. When the insightface pack is missing, ``eval.insightface_missing``
    decides: ``error`` (default) or ``auto`` (fall back to the recorded backend, logged)."""
    root = cfg.insightface_root or recorded_root or "~/.insightface"
    if cfg.face_backend == "insightface":
        name = f"insightface:{cfg.insightface_pack}"
        problem = _pack_missing(root, cfg.insightface_pack)
        if problem is None:
            return name, root
        if cfg.insightface_missing != "auto":
            raise FileNotFoundError(f"eval.face_backend=insightface: {problem}; set eval.insightface_root, or "
                                    "eval.insightface_missing=auto to use the test set's recorded backend")
        log.warning("eval.face_backend=insightface: %s; using the test set's recorded backend (%s)", problem,
                    recorded or "yunet")
    elif cfg.face_backend == "yunet":
        return "yunet", ""
    name = recorded or "yunet"
    if name.startswith("insightface"):
        pack = name.partition(":")[2] or cfg.insightface_pack
        problem = _pack_missing(root, pack)
        if problem is not None:
            raise FileNotFoundError(f"the test set was preprocessed with {name} and evaluation uses the same "
                                    f"detector, but {problem}; set eval.insightface_root, or eval.face_backend=yunet "
                                    "(KpsDis then compares keypoints of two detectors)")
        return f"insightface:{pack}", root
    return name, ""


def face_setup(cfg, recorded: str | None, recorded_root: str | None = None, *, backend: Any = None,
               embedder: Any = None, with_embedder: bool = True) -> FaceSetup:
    """Build the :class:`FaceSetup` of one test set (``backend`` / ``embedder`` given: used as they are)."""
    if backend is not None:
        name = getattr(backend, "name", type(backend).__name__)
        name = f"insightface:{cfg.insightface_pack}" if name == "insightface" else name
        root = ""
    else:
        name, root = resolve_face_backend(cfg, recorded, recorded_root)
        pack = name.partition(":")[2]
        backend = make_backend("insightface", root=root, pack=pack) if pack else make_backend(name)
    setup = FaceSetup(name, backend, recorded, root, _embedder=embedder)
    if embedder is None and with_embedder:
        setup._embedder_factory = lambda: make_embedder(cfg, name, root)
    return setup


def make_embedder(cfg, backend_name: str = "yunet", root: str = "") -> Any:
    """The identity embedder for ΔFaceSim by ``eval.face_id_backend``: ``auto`` is ArcFace from the same
    insightface pack when the detector is insightface (the paper's tooling), SFace otherwise."""
    from perception import face_id
    from perception.faces import find_pack_model

    kind = cfg.face_id_backend
    if kind == "auto":
        kind = "arcface" if backend_name.startswith("insightface") else "sface"
    if kind == "sface":
        return face_id.SFaceEmbedder()
    path = cfg.arcface_path
    if not path:
        pack = backend_name.partition(":")[2] or cfg.insightface_pack
        path = find_pack_model(root or cfg.insightface_root or "~/.insightface", pack, "recognition")
    return face_id.ArcFaceEmbedder(path)
