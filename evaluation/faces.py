"""One face per frame for the face-based metrics (KpsDis, ΔFaceSim, SyncNet tracks, LatentSync FVD crops).

Detection runs once per video through a face backend of the ``perception.faces`` registry
(``perception.faces.detect_per_frame``); every metric then reuses the result.
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
from typing import Any

from perception.faces import FaceSettings, make_face_backend

log = logging.getLogger(__name__)


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
    from perception.face_insightface import find_pack_model
    from perception.faces import FaceModelError

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
        backend = make_face_backend(name.partition(":")[0], FaceSettings(root=root, pack=pack or cfg.insightface_pack))
    setup = FaceSetup(name, backend, recorded, root, _embedder=embedder)
    if embedder is None and with_embedder:
        setup._embedder_factory = lambda: make_embedder(cfg, name, root)
    return setup


def make_embedder(cfg, backend_name: str = "yunet", root: str = "") -> Any:
    """The identity embedder for ΔFaceSim by ``eval.face_id_backend``: ``auto`` is ArcFace from the same
    insightface pack when the detector is insightface (the paper's tooling), SFace otherwise."""
    from perception import face_id
    from perception.face_insightface import find_pack_model

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
