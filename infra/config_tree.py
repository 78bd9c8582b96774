"""The one config tree: each section's dataclass lives next to its code."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluation.config import EvalConfig
from model.config import ModelConfig
from model.inference_config import InferenceConfig
from preprocessing.config import PreprocessConfig
from training.config import DataConfig, TrackingConfig, TrainConfig, VaeFitConfig


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


def load(yaml_paths=None, overrides=None) -> VExpressConfig:
    from infra.config import load_config

    return load_config(VExpressConfig, yaml_paths, overrides)
