"""The one config tree: each section's dataclass lives next to its code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.config import EvalConfig
from infra.tracking import TrackingConfig
from model.config import ModelConfig
from model.inference_config import InferenceConfig
from preprocessing.config import PreprocessConfig
from training.config import DataConfig, TrainConfig, VaeFitConfig

log = logging.getLogger(__name__)
DEFAULT_CONFIG = "tiny/stage3"  # generate / evaluate without --config nor a checkpoint config: the tiny model
OFFICIAL_CONFIG = "sd15/stage3"  # a five-file folder without a saved config: the official V-Express size


@dataclass
class VExpressConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    vae: VaeFitConfig = field(default_factory=VaeFitConfig)


def load(yaml_paths=None, overrides=None, saved=None) -> VExpressConfig:
    from infra.config import load_config

    return load_config(VExpressConfig, yaml_paths, overrides, saved=saved)


def load_for_checkpoint(config: str | None, checkpoint: str | Path | None,
                        overrides=None) -> tuple[VExpressConfig, str]:
    """The config of a run on ``checkpoint``, and where it came from (for logs and MLflow).

    ``--config`` wins; else the config saved beside the checkpoint (``model.checkpoint_paths``); else
    ``sd15/stage3`` for a folder without one (the official release) and ``tiny/stage3`` without a checkpoint.
    Overrides apply on top in every case."""
    if config:
        return load(config, overrides), str(config)
    if checkpoint:
        from model.checkpoint_paths import resolve_checkpoint

        resolved = resolve_checkpoint(checkpoint)
        if resolved.config is not None:
            log.info("config: %s (saved beside the checkpoint; --config to use another)", resolved.config)
            return load(None, overrides, saved=resolved.config), str(resolved.config)
        log.info("config: %s (%s has no config.yaml; --config to use another)", OFFICIAL_CONFIG, resolved.weights)
        return load(OFFICIAL_CONFIG, overrides), OFFICIAL_CONFIG
    return load(DEFAULT_CONFIG, overrides), DEFAULT_CONFIG


def section_sources() -> dict[str, str]:
    """Section name -> ``module.Class`` of its dataclass (for ``--help`` and ``vexpress print-config``)."""
    import dataclasses

    return {f.name: f"{f.default_factory.__module__.replace('.', '/')}.py::{f.default_factory.__name__}"
            for f in dataclasses.fields(VExpressConfig)}
