"""Build a :class:`model.pipeline.VExpressPipeline` from the config tree (and a checkpoint folder).

- Modules: ``model.build.build_modules(cfg.model)`` (seeded random init, or SD1.5/AnimateDiff from
  ``model.pretrained``), then the V-Express weights of ``checkpoint`` (or ``model.pretrained.vexpress``): any
  form ``model.checkpoint_paths`` resolves (stage output, step, export or official five-file folder), read by
  ``model.checkpoints``.
- VAE: ``model.build.build_vae`` (``model.pretrained.vae`` / ``<sd15>/vae``, else a small random one).
- Audio encoder: ``preprocessing.audio.AudioEncoder`` on ``model.pretrained.audio_encoder`` (else
  ``preprocess.audio_encoder_path``). The tiny preset without a path gets a tiny random Wav2Vec2 saved once
  with ``save_pretrained`` and loaded with ``from_pretrained``: the same code path as real weights.
- Scheduler: ``model.build.build_noise_scheduler`` (official DDIM, DPM-Solver++ or Euler).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from model.config import RANDOM_INIT_PRESETS
from model.pipeline import VExpressPipeline

log = logging.getLogger(__name__)

# InferenceConfig names -> model.build scheduler kinds.
SCHEDULER_KINDS = {"ddim": "ddim", "dpmsolver++": "dpm", "dpm": "dpm", "euler": "euler"}


def cache_dir() -> Path:
    return Path(os.environ.get("VEXPRESS_CACHE", Path.home() / ".cache" / "vexpress"))


def make_scheduler(kind: str):
    from model.build import build_noise_scheduler

    if kind not in SCHEDULER_KINDS:
        raise ValueError(f"inference.scheduler: unknown scheduler {kind!r}; choose one of {sorted(SCHEDULER_KINDS)}")
    return build_noise_scheduler(SCHEDULER_KINDS[kind])


def tiny_audio_encoder_folder(hidden_size: int) -> Path:
    """A tiny random Wav2Vec2 folder (created once per hidden size, atomically)."""
    from preprocessing.audio import save_tiny_wav2vec2

    folder = cache_dir() / f"tiny-wav2vec2-h{hidden_size}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    save_tiny_wav2vec2(tmp, hidden_size=hidden_size)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its folder is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def make_audio_encoder(cfg, device: str = "cpu"):
    from preprocessing.audio import AudioEncoder

    path = cfg.model.pretrained.audio_encoder or cfg.preprocess.audio_encoder_path
    kind = cfg.preprocess.audio_encoder
    if kind == "mel":
        path = ""
    elif not path:
        if cfg.model.preset not in RANDOM_INIT_PRESETS:
            raise ValueError("model.pretrained.audio_encoder: set a local audio-encoder folder "
                             "(e.g. wav2vec2-base-960h); only the tiny preset builds a random one")
        path, kind = tiny_audio_encoder_folder(cfg.model.audio_embed_dim), "wav2vec2"
        log.info("no audio encoder configured: using the tiny random Wav2Vec2 in %s", path)
    encoder = AudioEncoder(path, kind=kind, device=device, mel_bins=cfg.preprocess.mel_bins)
    if encoder.dim != cfg.model.audio_embed_dim:
        raise ValueError(f"{path}: audio encoder width {encoder.dim} != model.audio_embed_dim "
                         f"{cfg.model.audio_embed_dim}")
    return encoder


def weights_folder(checkpoint: str | Path) -> Path:
    """The folder holding the five files of any ``--checkpoint`` form (``model.checkpoint_paths``)."""
    from model.checkpoint_paths import resolve_checkpoint

    return resolve_checkpoint(checkpoint).weights


def load_vexpress_weights(modules, folder: str | Path) -> None:
    """Official five-file folder (.bin/.pth) or one of ours (.safetensors) into ``modules``, strictly."""
    from model.checkpoints import load_vexpress_weights as load_files

    path = weights_folder(folder)
    load_files(modules, path, strict=True)
    log.info("loaded V-Express weights from %s", path)


def load_pipeline(cfg, checkpoint: str | Path | None = None, *, device: str | None = None,
                  dtype: str | None = None, devices: list[str] | None = None,
                  offload: bool | None = None) -> VExpressPipeline:
    """The pipeline for ``cfg`` (a ``VExpressConfig``); keyword arguments override ``cfg.inference``."""
    from model.build import build_modules, build_vae

    inf = cfg.inference
    device = device or inf.device
    folder = checkpoint or cfg.model.pretrained.vexpress
    # With V-Express weights coming, skip the SD1.5 / AnimateDiff initialisation they would overwrite.
    modules = build_modules(cfg.model, pretrained=not folder)
    if folder:
        load_vexpress_weights(modules, folder)
    elif cfg.model.preset not in RANDOM_INIT_PRESETS:
        log.warning("no V-Express checkpoint given: the %s modules keep their initial weights", cfg.model.preset)
    devs = devices if devices is not None else (list(inf.devices) or None)
    return VExpressPipeline(
        modules, build_vae(cfg.model), make_scheduler(inf.scheduler),
        make_audio_encoder(cfg, "cpu" if (offload if offload is not None else inf.offload) else device),
        device=device, dtype=dtype or inf.dtype, devices=devs,
        offload=inf.offload if offload is None else offload, audio_context=cfg.model.audio_frames_context,
        audio_vectors_per_frame=cfg.model.audio_vectors_per_frame,
    )
