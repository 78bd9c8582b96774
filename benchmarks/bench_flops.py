"""FLOP counts of the sd15 preset (meta device: no memory, no weights) for the capacity plan.

Counts matmul/conv/attention FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` for one training
sample of each stage (ReferenceNet pass + denoising UNet on F frames + guider + audio projection), and
turns them into GPU-hours for a given number of samples, GPU peak and utilisation. Backward ~= 2x forward
for the trained modules; frozen modules still back-propagate activations where they sit upstream of
trained ones (the denoising UNet in stage II), which the factors below account for.

    python benchmarks/bench_flops.py [--frames 12] [--peak-tflops 989] [--mfu 0.35]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from infra.config_tree import load
from model.build import build_modules


def forward_flops(frames: int) -> dict[str, float]:
    cfg = load("sd15/stage1").model
    m = build_modules(cfg, device="meta").requires_grad_(False)
    lat, size = cfg.latent_size, cfg.resolution
    out: dict[str, float] = {}
    with torch.device("meta"):
        ref_latent = torch.randn(1, 4, lat, lat)
        with FlopCounterMode(display=False) as fc:
            feats = m.reference_net(ref_latent, timestep=0)
        out["reference_net"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            kps = m.v_kps_guider(torch.randn(1, 3, frames, size, size))
        out["v_kps_guider"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            audio = m.audio_projection(torch.randn(1, frames, cfg.audio_tokens_in, cfg.audio_embed_dim))
        out["audio_projection"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            m.denoising_unet(torch.randn(1, 4, frames, lat, lat), torch.tensor([500]), audio, feats, kps)
        out["denoising_unet"] = fc.get_total_flops()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--mfu", type=float, default=0.35, help="achieved fraction of peak")
    args = ap.parse_args()
    rows = []
    for stage, frames in ((1, 1), (2, args.frames), (3, args.frames)):
        f = forward_flops(frames)
        # fwd + bwd: trained modules 3x; stage II trains only the audio/motion layers inside the UNet but the
        # backward still flows through the whole UNet (~2x for activation grads) and not through the frozen
        # ReferenceNet (1x).
        factor = {1: dict(reference_net=3, denoising_unet=3, v_kps_guider=3, audio_projection=1),
                  2: dict(reference_net=1, denoising_unet=2.5, v_kps_guider=1, audio_projection=3),
                  3: dict(reference_net=3, denoising_unet=3, v_kps_guider=3, audio_projection=3)}[stage]
        train = sum(f[k] * factor[k] for k in f)
        rows.append((stage, frames, f, train))
    print(f"{'stage':>5} {'frames':>6} {'refnet TF':>10} {'unet TF':>9} {'guider TF':>9} {'audio TF':>9} "
          f"{'train TF/sample':>16} {'GPU-s/sample':>13}")
    for stage, frames, f, train in rows:
        gpu_s = train / (args.peak_tflops * 1e12 * args.mfu)
        print(f"{stage:>5} {frames:>6} {f['reference_net'] / 1e12:>10.3f} {f['denoising_unet'] / 1e12:>9.3f} "
              f"{f['v_kps_guider'] / 1e12:>9.3f} {f['audio_projection'] / 1e12:>9.4f} {train / 1e12:>16.2f} "
              f"{gpu_s:>13.3f}")
    print(f"(GPU peak {args.peak_tflops} TFLOP/s bf16, utilisation {args.mfu:.0%}; TF = 1e12 FLOPs)")


if __name__ == "__main__":
    main()
