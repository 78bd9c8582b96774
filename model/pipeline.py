"""V-Express inference: reference image + audio + V-Kps sequence -> video frames.

One sampling run:
1. ReferenceNet runs once on the reference latent (VAE posterior mean x scaling factor, timestep 0).
2. The V-Kps guider encodes every frame's V-Kps image; the audio encoder's features are interpolated to
   2 vectors per frame, windowed (+-2 frames) and projected to 5 tokens per frame.
3. Noise ``(1, 4, F, h, w)`` is drawn on the CPU from a seeded ``torch.Generator``; for each scheduler step
   the video is denoised in context windows (``model.windows``), each window one denoiser forward with the
   conditional and the unconditional branch batched together (all conditions zeroed in the unconditional
   half: V-Kps features, audio tokens and the reference bank), and overlapping predictions are averaged.
4. Latents are decoded one frame at a time, optionally median-filtered 3x3x3 (official), returned as uint8.

Frame count is the caller's (``model.generate`` uses round(audio seconds x fps)); nothing is cut to whole
windows here, unlike the official pipeline.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from model.audio_windows import prepare_audio_windows
from model.vkps import render_vkps
from model.windows import context_windows, denoise_windows

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@dataclass
class SamplingStats:
    """What the denoiser did: forwards, and frames pushed through it (window length x CFG batch)."""

    denoiser_calls: int = 0
    frame_evaluations: int = 0  # frames through a full UNet pass (x2 for a CFG pair)
    shallow_frame_evaluations: int = 0  # frames through the shallow pass of a deep-feature-reuse step
    windows: list[list[int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass
class VExpressOutput:
    frames: np.ndarray | None  # uint8 (F, H, W, 3), None when output_type="latent"
    latents: torch.Tensor  # (1, 4, F, h, w) float32 on the CPU
    stats: SamplingStats


class VExpressPipeline:
    """Holds the V-Express modules, the VAE, a diffusers scheduler and the audio encoder.

    ``modules``: ``model.build.VExpressModules`` (reference_net, denoising_unet, v_kps_guider, audio_projection).
    ``audio_encoder``: an object with ``encode(audio_16k_mono) -> (T, D)`` (``perception.audio.AudioEncoder``).
    ``devices``: several devices split each step's windows between replicas of the denoising UNet (one
    thread per device); the first is the main device. ``offload``: keep every module on the CPU and move it
    to the device only while it runs (less accelerator memory, more transfers).
    """

    def __init__(
        self,
        modules,
        vae,
        scheduler,
        audio_encoder=None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        devices: Sequence[str | torch.device] | None = None,
        offload: bool = False,
        vae_scaling_factor: float | None = None,
        audio_context: int = 2,
        audio_vectors_per_frame: int = 2,
    ) -> None:
        self.modules, self.vae, self.scheduler, self.audio_encoder = modules, vae, scheduler, audio_encoder
        self.dtype = resolve_dtype(dtype)
        self.devices = [torch.device(d) for d in (devices or [device])]
        self.device = self.devices[0]
        if offload and len(self.devices) > 1:
            raise ValueError("offload and several devices cannot be combined; choose one")
        self.offload = offload
        # The VAE records the factor that gives its latents unit variance (0.18215 for the SD VAE).
        self.vae_scaling_factor = vae_scaling_factor or float(vae.config.scaling_factor)
        self.vae_downsample = 2 ** (len(getattr(getattr(vae, "config", None), "block_out_channels", (0,) * 4)) - 1)
        self.audio_context, self.audio_vectors_per_frame = audio_context, audio_vectors_per_frame
        home = torch.device("cpu") if offload else self.device
        for m in (self.modules, self.vae):
            m.to(device=home, dtype=self.dtype).eval().requires_grad_(False)
        self._replicas = [self.modules.denoising_unet] + [
            copy.deepcopy(self.modules.denoising_unet).to(d) for d in self.devices[1:]
        ]

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _on_device(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """With offload, move ``module`` to the device for the block and back to the CPU after."""
        if not self.offload:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _image_tensor(self, image: np.ndarray, size: int) -> torch.Tensor:
        """uint8 (H, W, 3) -> (1, 3, size, size) in [-1, 1] (bilinear, antialiased resize as PIL does)."""
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"reference image must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float() / 255.0  # copy: PIL arrays are read-only
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False).clamp(0, 1)
        return x * 2.0 - 1.0

    @torch.no_grad()
    def encode_reference(self, image: np.ndarray, size: int):
        """Reference latent (1, 4, size/d, size/d) (d: the VAE's downsampling) and the ReferenceNet features."""
        x = self._image_tensor(image, size).to(self.device, self.dtype)
        with self._on_device(self.vae):
            latent = self.vae.encode(x).latent_dist.mean * self.vae_scaling_factor
        with self._on_device(self.modules.reference_net) as net:
            features = net(latent, timestep=0)
        return latent, features

    @torch.no_grad()
    def encode_kps(self, kps: np.ndarray, size: int, chunk: int = 16) -> torch.Tensor:
        """V-Kps features (1, C0, F, size/d, size/d) of keypoints (F, >=3, 2) in pixels of a size x size frame."""
        radius = max(1, round(4 * size / 512))  # the official radius 4 at 512 px, scaled to the frame size
        images = render_vkps(kps, size, radius=radius)  # (F, 3, H, W) in [0, 1]
        feats = []
        with self._on_device(self.modules.v_kps_guider) as guider:
            for start in range(0, len(images), chunk):
                part = images[start:start + chunk].to(self.device, self.dtype)
                feats.append(guider(part.permute(1, 0, 2, 3)[None]))  # (1, 3, f, H, W) -> (1, C0, f, h, w)
        return torch.cat(feats, dim=2)

    @torch.no_grad()
    def encode_audio(self, audio: np.ndarray, num_frames: int) -> torch.Tensor:
        """Audio tokens (1, F, Q, D) for 16 kHz mono ``audio``: encoder -> windows -> audio projection."""
        if self.audio_encoder is None:
            raise ValueError("this pipeline has no audio encoder; pass audio_features instead of audio")
        hidden = torch.as_tensor(np.asarray(self.audio_encoder.encode(np.asarray(audio, np.float32))))
        return self.project_audio(hidden, num_frames)

    @torch.no_grad()
    def project_audio(self, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Encoder features (T, D) -> audio tokens (1, F, Q, D)."""
        windows = prepare_audio_windows(hidden.float(), num_frames, self.audio_context, self.audio_vectors_per_frame)
        with self._on_device(self.modules.audio_projection) as proj:
            return proj(windows[None].to(self.device, self.dtype))

    def _step_kwargs(self, generator: torch.Generator) -> dict:
        params = inspect.signature(self.scheduler.step).parameters
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = 0.0
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    # ------------------------------------------------------------------ sampling
    def _make_step_fn(self, replica, device, on_dev, t, guidance_scale, ref_w, aud_w, stats, do_cfg=None,
                      cache=None):
        """A window denoiser for ``model.windows.denoise_windows``: one batched forward per group of windows,
        the conditional and unconditional branch stacked when ``do_cfg``.

        ``on_dev``: the conditions (reference features, V-Kps features, audio tokens) already on ``device``.
        ``cache``: a :class:`DeepFeatureCache` (reuse of deep UNet features between steps) or None.
        """
        do_cfg = guidance_scale > 1.0 if do_cfg is None else do_cfg
        branches = 2 if do_cfg else 1

        def step_fn(windows_latents: torch.Tensor, frames: list[int] | list[list[int]]) -> torch.Tensor:
            # (k, C, f, h, w): k windows of f frames each (``windows_per_batch``); frames as one list per window
            groups = frames if frames and isinstance(frames[0], (list, tuple)) else [frames]
            k, f = len(groups), len(groups[0])
            x = windows_latents.to(device, self.dtype)
            idx = torch.as_tensor([i for g in groups for i in g], device=device)
            audio = on_dev["audio"][0].index_select(0, idx).reshape(k, f, *on_dev["audio"].shape[2:])
            kps = on_dev["kps"][0].index_select(1, idx)  # (C0, k*f, h, w)
            kps = kps.reshape(kps.shape[0], k, f, *kps.shape[2:]).transpose(0, 1)
            mask = torch.ones(k, f, device=device, dtype=self.dtype)
            if do_cfg:  # [unconditional, conditional]: every condition zeroed in the first half
                x = torch.cat([x, x])
                audio = torch.cat([torch.zeros_like(audio), audio])
                kps = torch.cat([torch.zeros_like(kps), kps])
                mask = torch.cat([torch.zeros_like(mask), mask])
            ref = _expand_batch(on_dev["reference"], branches * k)
            timestep = torch.full((branches * k,), float(t), device=device)
            out = replica(x, timestep, audio_tokens=audio, reference_features=ref, kps_features=kps,
                          reference_frame_mask=mask, reference_attention_weight=ref_w, audio_attention_weight=aud_w,
                          deep_cache=cache, deep_cache_key=(tuple(g[0] for g in groups), branches)).sample
            shallow = cache is not None and cache.last_was_shallow
            with stats.lock:  # replicas on several devices run in threads
                stats.denoiser_calls += 1
                if shallow:
                    stats.shallow_frame_evaluations += branches * k * f
                else:
                    stats.frame_evaluations += branches * k * f
            out = out.float()
            if do_cfg:
                uncond, cond_ = out.chunk(2)
                out = uncond + guidance_scale * (cond_ - uncond)
            return out

        return step_fn

    @torch.no_grad()
    def __call__(
        self,
        reference_image: np.ndarray,
        kps: np.ndarray,
        audio: np.ndarray | None = None,
        *,
        audio_features: torch.Tensor | None = None,
        num_frames: int | None = None,
        size: int = 512,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.5,
        cfg_until: float = 1.0,
        context_frames: int = 12,
        context_overlap: int = 4,
        windows_per_batch: int = 1,
        deep_cache_interval: int = 1,
        reference_attention_weight: float = 0.95,
        audio_attention_weight: float = 3.0,
        seed: int | None = 42,
        generator: torch.Generator | None = None,
        quantize: str = "truncate",
        median_filter: bool = True,
        output_type: str = "uint8",
        progress: bool = True,
    ) -> VExpressOutput:
        """Generate ``num_frames`` frames (default: the length of ``kps``).

        ``reference_image``: uint8 (H, W, 3) RGB, resized to ``size`` x ``size``. ``kps``: (F, >=3, 2)
        keypoints in pixels of the ``size`` x ``size`` frame (already retargeted, one row per frame).
        ``audio``: 16 kHz mono float32 covering the video, or precomputed ``audio_features`` (T, D).
        """
        kps = np.asarray(kps, dtype=np.float64)
        num_frames = int(num_frames or len(kps))
        if len(kps) != num_frames:
            raise ValueError(f"kps has {len(kps)} frames but num_frames={num_frames}; retarget/interpolate first")
        if output_type not in ("uint8", "latent"):
            raise ValueError(f"output_type must be uint8|latent, got {output_type!r}")
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(42 if seed is None else seed)

        _, reference = self.encode_reference(reference_image, size)
        cond = {
            "reference": reference,
            "kps": self.encode_kps(kps, size),
            "audio": (self.project_audio(torch.as_tensor(audio_features), num_frames) if audio_features is not None
                      else self.encode_audio(audio, num_frames)),
        }
        options = SamplingOptions(num_inference_steps, guidance_scale, cfg_until, context_frames, context_overlap,
                                  windows_per_batch, deep_cache_interval, reference_attention_weight,
                                  audio_attention_weight)
        latents = self.sample(cond, num_frames, size // self.vae_downsample, options, generator, progress)
        stats = latents.stats
        frames = None if output_type == "latent" else self.decode(latents.latents, median_filter, progress, quantize)
        return VExpressOutput(frames=frames, latents=latents.latents.float().cpu(), stats=stats)

    @torch.no_grad()
    def sample(self, cond, num_frames, latent_size, options: SamplingOptions, generator, progress=True):
        channels = getattr(getattr(self.modules.denoising_unet, "config", None), "in_channels", 4)
        shape = (1, channels, num_frames, latent_size, latent_size)
        # Noise drawn on the CPU so a seed gives the same video on every device.
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        self.scheduler.set_timesteps(options.num_inference_steps, device=self.device)
        latents = latents * self.scheduler.init_noise_sigma
        windows = context_windows(num_frames, options.context_frames, options.context_overlap)
        stats = SamplingStats(windows=windows)
        step_kwargs = self._step_kwargs(generator)
        cond_on = [_to(cond, d) for d in self.devices]  # copied to each replica's device once
        caches = [DeepFeatureCache(options.deep_cache_interval) if options.deep_cache_interval > 1 else None
                  for _ in self._replicas]
        cfg_steps = options.cfg_steps(len(self.scheduler.timesteps))
        with self._on_device(self.modules.denoising_unet):
            for i, t in enumerate(tqdm(self.scheduler.timesteps, desc="denoising", disable=not progress)):
                model_in = self.scheduler.scale_model_input(latents, t)
                do_cfg = options.guidance_scale > 1.0 and i < cfg_steps
                for cache in caches:
                    if cache is not None:
                        cache.begin_step(i)
                fns = [self._make_step_fn(r, d, c, t, options.guidance_scale, options.reference_attention_weight,
                                          options.audio_attention_weight, stats, do_cfg, cache)
                       for r, d, c, cache in zip(self._replicas, self.devices, cond_on, caches)]
                pred = denoise_windows(model_in, fns, windows, batch=options.windows_per_batch)
                latents = self.scheduler.step(pred.to(latents.dtype), t, latents, **step_kwargs).prev_sample
        return _Sampled(latents, stats)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, median_filter: bool = True, progress: bool = True,
               quantize: str = "truncate") -> np.ndarray:
        """Latents (1, C, F, h, w) -> uint8 (F, H, W, 3), one frame per VAE call (bounded memory)."""
        frames = []
        with self._on_device(self.vae) as vae:
            for f in tqdm(range(latents.shape[2]), desc="decoding", disable=not progress):
                z = latents[:, :, f].to(self.device, self.dtype) / self.vae_scaling_factor
                frames.append((vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy())
        return postprocess(np.stack(frames), quantize, median_filter)


def postprocess(video: np.ndarray, quantize: str = "truncate", median_filter: bool = True) -> np.ndarray:
    """Float frames (F, H, W, 3) in [0, 1] -> uint8, then optionally the 3x3x3 spatio-temporal median per channel.

    ``truncate`` with the median is the official post-processing exactly: ``(x * 255).astype(uint8)``, then
    ``scipy.ndimage.median_filter(size=(3, 3, 3, 1))`` (its default ``reflect`` border: the edge sample mirrored,
    ``d c b a | a b c d | d c b a``). ``round`` rounds to the nearest level instead.
    """
    if quantize not in ("truncate", "round"):
        raise ValueError(f"quantize must be truncate|round, got {quantize!r}")
    scaled = np.asarray(video, np.float32) * 255
    out = (np.round(scaled) if quantize == "round" else scaled).astype(np.uint8)
    if median_filter and len(out) > 0:
        from scipy.ndimage import median_filter as scipy_median

        out = scipy_median(out, size=(3, 3, 3, 1), mode="reflect")
    return out


@dataclass(frozen=True)
class SamplingOptions:
    """How one video is sampled (``model.inference_config.sampling_kwargs`` fills these from the config)."""

    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    cfg_until: float = 1.0  # CFG on the first ceil(cfg_until * steps) steps, the conditional branch alone after
    context_frames: int = 12
    context_overlap: int = 4
    windows_per_batch: int = 1
    deep_cache_interval: int = 1
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0

    def cfg_steps(self, steps: int) -> int:
        return min(steps, int(np.ceil(self.cfg_until * steps - 1e-9)))


class DeepFeatureCache:
    """Reuse of deep UNet features across adjacent steps (DeepCache, Ma et al. 2024).

    Every ``interval``-th step runs the whole UNet and keeps, per window, the input of its last up block; the steps
    in between run only the shallow path (conv_in, the first down block, the last up block) on that kept input.
    A window whose batch changed (CFG switched off) gets a full pass first.
    """

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.features: dict = {}
        self.full_step = True
        self.last_was_shallow = False

    def begin_step(self, index: int) -> None:
        self.full_step = index % self.interval == 0

@dataclass
class _Sampled:
    latents: torch.Tensor
    stats: SamplingStats


def _map_tensors(value, fn):
    """Apply ``fn`` to every tensor of a tensor / list / ReferenceFeatures-like dataclass."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and hasattr(value, "features"):
        return dataclasses.replace(value, features=[fn(f) for f in value.features])
    return value


def _to(value, device):
    return _map_tensors(value, lambda t: t.to(device))


def _expand_batch(value, batch: int):
    """Repeat batch-1 reference features to the forward's batch (the CFG half is masked to zero)."""
    if batch == 1:
        return value
    return _map_tensors(value, lambda t: t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t)
