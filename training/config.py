"""Training configuration: data loading, one stage's optimisation, the VAE fit (tracking: ``infra/tracking.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import check
from infra.tracking import TrackingConfig  # noqa: F401 - shared with evaluation; re-exported here


@dataclass
class DataConfig:
    shards: str = ""  # dir with index.json, a brace pattern, or a URL
    num_frames: int = 1  # target frames per sample (1 in stage I, 12 in II/III)
    reference_min_distance: int = 4  # reference frame at least this many frames from the target clip
    horizontal_flip: float = 0.5
    num_workers: int = 1
    shuffle_buffer: int = 16  # block shuffle of encoded samples (per rank and worker)
    seed: int = 0
    use_latents: bool = True  # use the shards' precomputed latents when present (else VAE-encode frames)
    resample: bool = True  # endless: a new seeded shard order every epoch
    # check local shards against the sha256 in their index.json before use (a damaged one is read sample by
    # sample, dropping and counting the samples that do not match; training/shard_check.py)
    verify_checksums: bool = True

    def __post_init__(self) -> None:
        check(self.num_frames >= 1, "data.num_frames", "must be >= 1")
        check(self.reference_min_distance >= 0, "data.reference_min_distance", "must be >= 0")
        check(0.0 <= self.horizontal_flip <= 1.0, "data.horizontal_flip", "must be in [0, 1]")
        check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        check(self.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1")


@dataclass
class TrainConfig:
    stage: int = 1
    init_from: str = ""  # checkpoint folder of the previous stage (stage II/III)
    output_dir: str = "runs/tiny"
    max_steps: int = 10
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant (official) | cosine (to 0 at max_steps)
    max_grad_norm: float = 1.0
    noise_offset: float = 0.05
    min_snr_gamma: float = 5.0  # the official gamma; 0 disables min-SNR weighting
    min_snr_form: str = "official"  # official: min(SNR+1, g)/(SNR+1) | diffusers: min(SNR, g)/(SNR+1)
    latent_sampling: str = "sample"  # sample: draw from the VAE posterior each step (official) | mean
    mouth_loss_weight: float = 100.0
    uncond_ratio: float = 0.1  # CFG dropout of all conditions together
    reference_drop_rate: float = 0.2  # per frame, stages II/III
    kps_drop_rate: float = 0.5  # per frame, stages II/III
    gradient_checkpointing: bool = False
    zero_stage: int = 2
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    checkpoint_every: int = 5
    keep_last: int = 2
    checkpoint_checksums: bool = True  # sha256 of every checkpoint file in its checkpoint.json (sizes always)
    validate_every: int = 0
    seed: int = 42
    engine: str = "deepspeed"  # deepspeed | torch (plain PyTorch: benchmark comparison only)
    deepspeed_config: str = ""  # JSON path; empty -> infra/deepspeed/zero{zero_stage}.json
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    log_every: int = 1
    validation_seed: int = 1234
    validation_frames: int = 4
    validation_shards: str = ""  # the validation clip's shards (first sample with audio); empty: data.shards

    def __post_init__(self) -> None:
        check(self.stage in (1, 2, 3), "train.stage", f"must be 1, 2 or 3, got {self.stage}")
        check(self.max_steps >= 1, "train.max_steps", "must be >= 1")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        for name in ("uncond_ratio", "reference_drop_rate", "kps_drop_rate"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, f"train.{name}", f"must be in [0, 1], got {v}")
        check(self.mouth_loss_weight >= 0, "train.mouth_loss_weight", "must be >= 0")
        check(self.zero_stage in (0, 1, 2, 3), "train.zero_stage", "must be 0..3")
        check(self.precision in ("auto", "fp32", "bf16", "fp16"), "train.precision", "must be auto|fp32|bf16|fp16")
        check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        check(self.lr_schedule in ("constant", "cosine"), "train.lr_schedule",
              f"must be constant|cosine, got {self.lr_schedule!r}")
        check(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0 disables clipping)")
        check(self.noise_offset >= 0, "train.noise_offset", "must be >= 0")
        check(self.min_snr_gamma >= 0, "train.min_snr_gamma", "must be >= 0 (0 disables)")
        check(self.min_snr_form in ("official", "diffusers"), "train.min_snr_form",
              f"must be official|diffusers, got {self.min_snr_form!r}")
        check(self.latent_sampling in ("sample", "mean"), "train.latent_sampling",
              f"must be sample|mean, got {self.latent_sampling!r}")
        check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
        check(self.validate_every >= 0, "train.validate_every", "must be >= 0 (0 disables)")
        check(self.engine in ("deepspeed", "torch"), "train.engine", f"must be deepspeed|torch, got {self.engine!r}")
        check(self.log_every >= 1, "train.log_every", "must be >= 1")
        check(self.validation_frames >= 1, "train.validation_frames", "must be >= 1")


@dataclass
class VaeFitConfig:
    """``python -m training.fit_vae``: the small VAE the CPU preset fits to its training crops."""

    output_dir: str = "runs/cpu/vae"
    max_steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-3
    kl_weight: float = 1e-6
    checkpoint_every: int = 200
    eval_shards: str = ""  # held-out frames for the reported PSNR; empty: the training frames
    threads: int = 0  # torch threads (0: torch's default, all cores)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.max_steps >= 1, "vae.max_steps", "must be >= 1")
        check(self.batch_size >= 1, "vae.batch_size", "must be >= 1")
        check(self.lr > 0, "vae.lr", f"must be > 0, got {self.lr}")
        check(self.kl_weight >= 0, "vae.kl_weight", "must be >= 0")
        check(self.checkpoint_every >= 1, "vae.checkpoint_every", "must be >= 1")
        check(self.threads >= 0, "vae.threads", "must be >= 0")
