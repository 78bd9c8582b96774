"""Model configuration (presets ``tiny`` and ``sd15`` live in ``configs/``).

The ``sd15`` values reproduce the official V-Express modules exactly (see
docs/official-architecture.md and ``model/data/``); ``tiny`` keeps the same
topology with small widths so a full forward runs in well under a second on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check


@dataclass
class PretrainedPaths:
    """Local folders/files with real weights. Empty = build with random weights."""

    sd15: str = ""  # diffusers SD1.5 folder (unet/, vae/ ...) used to initialise both UNets
    vae: str = ""  # diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse); defaults to <sd15>/vae
    audio_encoder: str = ""  # transformers Wav2Vec2 folder (facebook/wav2vec2-base-960h layout)
    motion_module: str = ""  # AnimateDiff mm_sd_v15_v2.ckpt (optional, stage II init)
    vexpress: str = ""  # folder with the five official (or our) V-Express checkpoint files


# Presets whose modules may be built with random weights (tests, the CPU demo); sd15 and custom need real ones.
RANDOM_INIT_PRESETS = ("tiny", "cpu")
PRESETS = (*RANDOM_INIT_PRESETS, "sd15", "custom")


@dataclass
class ModelConfig:
    preset: str = "tiny"
    # --- UNets (shared SD1.5 layout for ReferenceNet and the denoising UNet) ---
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 2  # number of heads, as in SD1.5's config
    norm_num_groups: int = 8
    cross_attention_dim: int = 32  # audio token width (768 for sd15)
    # --- motion modules ---
    motion_num_attention_heads: int = 2
    motion_max_len: int = 32
    # --- V-Kps guider ---
    kps_guider_channels: list[int] = field(default_factory=lambda: [4, 8, 8, 16])
    # --- audio projection ---
    audio_embed_dim: int = 32  # audio-encoder hidden size (768 for wav2vec2-base)
    audio_proj_depth: int = 1
    audio_proj_heads: int = 2
    audio_proj_dim_head: int = 16
    audio_num_queries: int = 5
    audio_frames_context: int = 2  # +-2 video frames of audio context
    audio_vectors_per_frame: int = 2
    # --- VAE / sizes ---
    vae_block_out_channels: list[int] = field(default_factory=lambda: [8, 8, 8, 8])  # n blocks: 2^(n-1) x down
    vae_mid_attention: bool = True  # the SD VAE's mid-block self-attention (off: a fully convolutional VAE)
    vae_latent_channels: int = 4
    vae_scaling_factor: float = 0.18215  # for randomly built VAEs; a VAE folder's own config.json value wins
    resolution: int = 64  # frame size in pixels (512 for sd15)
    pretrained: PretrainedPaths = field(default_factory=PretrainedPaths)

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "model.preset", f"must be one of {'|'.join(PRESETS)}, got {self.preset!r}")
        check(len(self.block_out_channels) == 4, "model.block_out_channels", "needs 4 entries (SD1.5 layout)")
        check(all(c % self.norm_num_groups == 0 for c in self.block_out_channels), "model.block_out_channels",
              f"every width must be divisible by norm_num_groups={self.norm_num_groups}")
        check(self.layers_per_block >= 1, "model.layers_per_block", "must be >= 1")
        check(self.resolution > 0, "model.resolution", "must be > 0")
        check(self.in_channels == self.out_channels == self.vae_latent_channels, "model.in_channels",
              f"in_channels ({self.in_channels}), out_channels ({self.out_channels}) and vae_latent_channels "
              f"({self.vae_latent_channels}) must be equal: the UNets denoise the VAE's latents")
        check(len(self.vae_block_out_channels) >= 2, "model.vae_block_out_channels", "needs at least 2 entries")
        check(self.resolution % self.vae_downsample == 0, "model.resolution",
              f"must be a multiple of the VAE's downsampling factor {self.vae_downsample}")
        check(len(self.kps_guider_channels) == len(self.vae_block_out_channels), "model.kps_guider_channels",
              f"needs {len(self.vae_block_out_channels)} entries: the V-Kps guider downsamples as much as the VAE "
              f"(one entry per vae_block_out_channels entry)")
        check(self.audio_num_queries >= 1, "model.audio_num_queries", "must be >= 1")
        check(self.audio_frames_context >= 0, "model.audio_frames_context", "must be >= 0")

    @property
    def audio_tokens_in(self) -> int:
        """Audio vectors per video frame fed to the projection (10 for the official setup)."""
        return self.audio_vectors_per_frame * (2 * self.audio_frames_context + 1)

    @property
    def vae_downsample(self) -> int:
        """Pixels per latent cell along each side (8 for the SD VAE's four blocks)."""
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_downsample
