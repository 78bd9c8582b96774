"""Speed of the conditioning helpers: V-Kps rendering, audio windowing + projection, checkpoint I/O (CPU).

    python benchmarks/bench_conditioning.py [--frames 12] [--repeats 20] [--threads 1]

Time is the median of ``--repeats`` runs after one warm-up. Rows:
- render_vkps: ``--frames`` frames of V-Kps images as a float (F, 3, S, S) tensor;
- draw_vkps loop: the same frames drawn one by one as uint8 H x W x 3 (the official per-frame recipe);
- audio windows: interpolation of 50 Hz encoder states to 2 per frame + the (F, 10, D) windows;
- audio projection: the Perceiver resampler on those windows (sd15 size, random weights);
- checkpoint save/load: the five files of the tiny preset as safetensors.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def face_keypoints(frames: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    s = size / 512
    left = rng.uniform(150, 250, (frames, 2)) * s
    right = left + rng.uniform([80, -20], [160, 20], (frames, 2)) * s
    nose = (left + right) / 2 + rng.uniform([-20, 40], [20, 90], (frames, 2)) * s
    return np.stack([left, right, nose], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from model.audio_projection import AudioProjection
    from model.audio_windows import prepare_audio_windows
    from model.build import build_modules
    from model.checkpoints import load_vexpress_weights, save_vexpress_weights
    from model.config import ModelConfig
    from model.vkps import draw_vkps, render_vkps

    f = args.frames
    rows: list[tuple[str, str, float]] = []
    for size in (512, 256, 64):
        kps = face_keypoints(f, size)
        rows.append((f"render_vkps {f} frames", f"{size}x{size}", timed(lambda k=kps, s=size: render_vkps(k, s),
                                                                        args.repeats)))
    kps = face_keypoints(f, 512)
    rows.append((f"draw_vkps loop {f} frames", "512x512 uint8",
                 timed(lambda: [draw_vkps(k, 512, 512) for k in kps], args.repeats)))
    hidden = torch.randn(1, int(f / 25 * 50) + 1, 768)
    rows.append((f"audio windows {f} frames", "D=768", timed(lambda: prepare_audio_windows(hidden, f), args.repeats)))
    windows = prepare_audio_windows(hidden, f)
    projection = AudioProjection().eval()
    with torch.no_grad():
        rows.append((f"audio projection {f} frames", "sd15, fp32",
                     timed(lambda: projection(windows), max(3, args.repeats // 4))))
    modules = build_modules(ModelConfig(), pretrained=False)
    with tempfile.TemporaryDirectory() as folder:
        rows.append(("checkpoint save (5 files)", "tiny", timed(lambda: save_vexpress_weights(modules, folder), 5)))
        rows.append(("checkpoint load (5 files)", "tiny", timed(lambda: load_vexpress_weights(modules, folder), 5)))

    print(f"{'operation':<32} {'size':<14} {'ms':>9} {'ms/frame':>9}")
    for name, size, ms in rows:
        per_frame = f"{ms / f:9.2f}" if "frames" in name else f"{'':>9}"
        print(f"{name:<32} {size:<14} {ms:9.2f} {per_frame}")


if __name__ == "__main__":
    main()
