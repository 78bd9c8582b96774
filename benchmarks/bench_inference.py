"""Inference cost on the tiny preset (random weights) on this machine's CPU.

Two settings, both 25 DDIM steps with CFG 3.5 (conditional + unconditional batched in one forward):
- official: context 24 / overlap 4 (the release's inference.py);
- ours: context 12 / overlap 4 (the paper's window, our default).

For each: seconds per output frame (whole pipeline call: reference net, V-Kps + audio encoding, sampling,
per-frame VAE decoding + median filter; wall clock and this process's CPU time, which a busy shared
machine disturbs less), the sampling part alone, denoiser forwards, and denoiser
frame-evaluations per output frame (frames pushed through the UNet, the CFG pair counted twice).

    python benchmarks/bench_inference.py [--seconds 3.2] [--fps 25] [--steps 25] [--threads 1] [--repeats 1]

Frame-evaluations per output frame = steps x 2 x (sum of window lengths) / frames, e.g. 80 frames:
24/4 -> 4 windows (0, 20, 40, 56) -> 25 x 2 x 96 / 80 = 60; 12/4 -> 10 windows -> 25 x 2 x 120 / 80 = 75.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

SETTINGS = {"official (24/4)": (24, 4), "ours (12/4)": (12, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.2)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from skimage import data

    from infra.config_tree import load
    from model.generate import num_output_frames
    from model.pipeline_loading import load_pipeline
    from model.retarget import fix_face

    cfg = load("tiny/stage3")
    pipe = load_pipeline(cfg)
    size = cfg.model.resolution
    samples = int(round(args.seconds * 16000))
    t = np.arange(samples) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    frames = num_output_frames(samples, args.fps)
    kps = fix_face([[0.34 * size, 0.4 * size], [0.66 * size, 0.4 * size], [0.5 * size, 0.6 * size]], frames)
    image = data.astronaut()

    rows = []
    for name, (ctx, overlap) in SETTINGS.items():
        best_total = best_sample = best_cpu = float("inf")
        for _ in range(args.repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = pipe(image, kps, audio, num_frames=frames, size=size, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, context_frames=ctx, context_overlap=overlap, progress=False,
                       output_type="latent")
            t_sample_call = time.perf_counter() - t0
            t1 = time.perf_counter()
            video = pipe.decode(out.latents, median_filter=True, progress=False)
            total = t_sample_call + time.perf_counter() - t1
            best_total, best_sample = min(best_total, total), min(best_sample, t_sample_call)
            best_cpu = min(best_cpu, time.process_time() - c0)
        assert len(video) == frames
        s = out.stats
        rows.append((name, len(s.windows), s.denoiser_calls, s.frame_evaluations / frames, best_total / frames,
                     best_sample / frames, best_cpu / frames))

    print(f"tiny preset, CPU ({args.threads} thread(s)), {frames} frames ({args.seconds:g} s at {args.fps:g} fps), "
          f"{args.steps} steps, CFG {args.guidance:g}, resolution {size}, load avg {os.getloadavg()[0]:.1f}")
    header = (f"{'setting':<18}{'windows':>8}{'forwards':>10}{'frame-evals/frame':>19}{'s/frame':>10}"
              f"{'sampling s/frame':>18}{'CPU s/frame':>13}")
    print(header)
    print("-" * len(header))
    for name, windows, calls, evals, spf, sample_spf, cpu_spf in rows:
        print(f"{name:<18}{windows:>8}{calls:>10}{evals:>19.1f}{spf:>10.4f}{sample_spf:>18.4f}{cpu_spf:>13.4f}")


if __name__ == "__main__":
    main()
