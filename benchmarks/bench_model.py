"""Speed and memory of the V-Express modules on CPU (tiny preset) and the sd15 parameter counts (meta device).

    python benchmarks/bench_model.py [--frames 12] [--repeats 5] [--threads 1]

Rows (tiny, random weights, batch 1, 64x64 frames -> 8x8 latents):
- reference pass: one ReferenceNet forward (the 10 reference features);
- denoiser forward: one ``--frames``-frame denoising-UNet forward (audio tokens, kps features, reference);
- full forward: both, as one sampling step of inference without CFG;
- train step: the same with gradients (forward + backward through both UNets).
Time is the median of ``--repeats`` runs after one warm-up. Memory is the growth of peak RSS
(``resource.ru_maxrss``) over the built model while the step runs (each row in a forked child process).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _measure_in_child(fn, repeats: int, conn) -> None:
    before = peak_rss_mb()
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    conn.send((statistics.median(times[1:]), peak_rss_mb() - before))
    conn.close()


def measure(fn, repeats: int) -> tuple[float, float]:
    """Median seconds and peak-RSS growth of ``fn``, run in a forked child so each row starts from the same
    memory state (the child inherits the built model; its peak RSS then grows only by what ``fn`` needs)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_measure_in_child, args=(fn, repeats, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def tiny_rows(frames: int, repeats: int) -> list[tuple[str, float, float]]:
    from model.build import build_modules
    from model.config import ModelConfig

    cfg = ModelConfig()
    m = build_modules(cfg, pretrained=False)
    s = cfg.latent_size
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, s, s, generator=g)
    sample = torch.randn(1, 4, frames, s, s, generator=g)
    audio = torch.randn(1, frames, cfg.audio_num_queries, cfg.cross_attention_dim, generator=g)
    kps = torch.randn(1, cfg.block_out_channels[0], frames, s, s, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        ref = m.reference_net(latent)

    def reference():
        with torch.no_grad():
            return m.reference_net(latent)

    def denoise(features=ref, grad=False):
        with torch.set_grad_enabled(grad):
            return m.denoising_unet(sample, t, audio, features, kps_features=kps).sample

    def full():
        return denoise(reference())

    def train_step():
        m.zero_grad(set_to_none=True)
        out = denoise(m.reference_net(latent), grad=True)
        out.pow(2).mean().backward()

    m.eval()
    rows = [("reference pass", *measure(reference, repeats)),
            (f"denoiser forward ({frames} frames)", *measure(denoise, repeats)),
            (f"full forward ({frames} frames)", *measure(full, repeats))]
    m.train()
    rows.append((f"train step fwd+bwd ({frames} frames)", *measure(train_step, repeats)))
    return rows


def sd15_counts() -> list[tuple[str, int, int]]:
    from infra.config_tree import load
    from model.build import build_modules

    m = build_modules(load("sd15/stage1").model, device="meta")
    rows = []
    for name in ("reference_net", "denoising_unet", "v_kps_guider", "audio_projection"):
        state = getattr(m, name).state_dict()
        rows.append((name, len(state), sum(v.numel() for v in state.values())))
    motion = {k: v for k, v in m.denoising_unet.state_dict().items() if "motion_modules" in k}
    rows.append(("  of which motion_modules", len(motion), sum(v.numel() for v in motion.values())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"tiny preset, CPU, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'step':<38} {'median s':>10} {'peak RSS +MB':>13}")
    for name, seconds, mb in tiny_rows(args.frames, args.repeats):
        print(f"{name:<38} {seconds:>10.3f} {mb:>13.1f}")
    print(f"(process peak RSS {peak_rss_mb():.0f} MB)\n")

    print("sd15 state dicts (meta device; buffers included, as the official files)")
    print(f"{'module':<38} {'tensors':>10} {'values':>15}")
    for name, tensors, values in sd15_counts():
        print(f"{name:<38} {tensors:>10} {values:>15,}")


if __name__ == "__main__":
    main()
