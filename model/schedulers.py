"""The noise-scheduler registry: every sampler shares the official betas, v-prediction, zero terminal SNR and
trailing timestep spacing (docs/official-architecture.md §9); they differ only in how they step.

The names are the ones ``inference.scheduler`` takes; its validator reads them from :data:`SCHEDULERS`. Adding a
sampler is one line here (a diffusers class name and its extra settings).
"""

from __future__ import annotations

from typing import Any

OFFICIAL_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                         steps_offset=1)
# name -> (diffusers class, settings beyond the official schedule); diffusers is imported on first use
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True)),  # the official sampler
    "dpmsolver++": ("DPMSolverMultistepScheduler", dict(final_sigmas_type="zero")),
    "euler": ("EulerDiscreteScheduler", {}),
}


def build_noise_scheduler(name: str = "ddim", **overrides: Any):
    """A diffusers scheduler by registry name, with the official schedule; ``overrides`` change single settings."""
    if name not in SCHEDULERS:
        raise ValueError(f"inference.scheduler: unknown scheduler {name!r}; choose one of {'|'.join(SCHEDULERS)}")
    import diffusers

    cls, extra = SCHEDULERS[name]
    return getattr(diffusers, cls)(**{**OFFICIAL_SCHEDULE, **extra, **overrides})
