"""Inference cost and quality per speed preset and per lever, on this machine's CPU.

    python benchmarks/bench_inference.py [--demo runs/demo] [--frames 100] [--sd15] [--quick]

Rows: each preset of ``model.inference_config.PRESETS`` (``quality`` is the official recipe; the default one is
marked), then each lever alone applied to ``quality``. Columns:

- UNet frame-evaluations per output frame: frames pushed through a full UNet pass (a CFG pair counts twice),
  and those through the shallow pass of deep-feature reuse, over the video's frames;
- seconds per output frame: the whole pipeline call (reference net, V-Kps and audio encoding, sampling, VAE
  decoding, post-processing), one thread;
- peak RSS of the row's process (each row runs in a fresh process);
- quality on the trained demo model (``make demo`` leaves it in ``--demo``), on the held-out clip, against the
  ``quality`` preset's video: the demo summary metrics (``evaluation.summary``) and the PSNR of the decoded
  frames vs the ``quality`` frames. Without a trained demo the tiny preset's random weights give the cost only.

``--sd15`` adds seconds per frame-evaluation of the sd15-size denoising UNet (random weights, one 4-frame window
of 64x64 latents, CFG pair) and each preset's seconds per output frame estimated from it: a CPU has no business
running sd15, so only its unit cost is measured. The GPU figures come from ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from model.inference_config import DEFAULT_PRESET, PRESETS

LEVERS = {  # each lever alone, on top of the official recipe
    "quality + DPM-Solver++ 10 steps": {"scheduler": "dpmsolver++", "num_inference_steps": 10},
    "quality + CFG on the first half": {"cfg_until": 0.5},
    "quality + windows 32/4": {"context_frames": 32, "context_overlap": 4},
    "quality + deep-feature reuse every 2": {"deep_cache_interval": 2},
    "quality + 4 windows per forward": {"windows_per_batch": 4},
}


def rows() -> dict[str, dict]:
    out = {name: {**fields, "preset": name} for name, fields in PRESETS.items()}
    out.update({name: {**PRESETS["quality"], "preset": "quality", **lever} for name, lever in LEVERS.items()})
    return out


def _config(demo: Path | None, fields: dict):
    from infra.config_tree import load

    overrides = [f"inference.{k}={v}" for k, v in fields.items()] + ["inference.progress=false"]
    if demo is None:
        return load("tiny/stage3", overrides), None
    export = demo / "runs" / "stage3" / "checkpoints"
    export = export / (export / "latest").read_text().strip() / "export"
    return load("cpu/stage3", [f"model.pretrained.vae={demo / 'runs' / 'vae' / 'vae'}", *overrides]), export


def run_row(args: tuple) -> dict:
    """One row in a fresh process: generate the held-out clip (or a synthetic one), time it, keep the frames."""
    name, fields, demo, frames, out = args
    import torch

    torch.set_num_threads(1)
    from model.inference_config import sampling_kwargs
    from model.pipeline_loading import load_pipeline

    cfg, checkpoint = _config(demo, fields)
    pipe = load_pipeline(cfg, checkpoint)
    size = cfg.model.resolution
    if demo is not None:
        clip, reference = heldout(demo, size)
        frames = min(frames, len(clip["frames"]))
        kps = clip["kps512"][:frames, :3] * (size / 512)
        audio = {"audio_features": torch.from_numpy(np.asarray(clip["features"], np.float32))}
    else:
        from skimage import data

        reference = data.astronaut()
        t = np.arange(frames)[:, None]
        kps = np.stack([[0.34, 0.4], [0.66, 0.4], [0.5, 0.6]])[None] * size + np.concatenate(
            [np.sin(t / 8), np.cos(t / 9)], 1)[:, None] * 2
        audio = {"audio": (0.3 * np.sin(np.arange(int(frames / 25 * 16000)) / 8)).astype(np.float32)}
    start = time.perf_counter()
    result = pipe(reference, kps, num_frames=frames, size=size, **audio, **sampling_kwargs(cfg.inference))
    seconds = time.perf_counter() - start
    np.save(out, result.frames)
    return {"name": name, "frames": frames, "seconds_per_frame": seconds / frames,
            "full_evals": result.stats.frame_evaluations / frames,
            "shallow_evals": result.stats.shallow_frame_evaluations / frames,
            "peak_rss_gib": peak_rss_gib()}


def peak_rss_gib() -> float:
    """This process's resident-set high-water mark. Not ``getrusage``: its ``ru_maxrss`` keeps the parent's peak
    across fork + exec, so every spawned row would report the launcher's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def heldout(demo: Path, size: int) -> tuple[dict, np.ndarray]:
    """The demo's held-out clip and its reference image at the model size (as the demo summary uses them)."""
    import cv2

    from evaluation.summary import heldout_clip

    clip = heldout_clip(str(demo / "test_shards"))
    return clip, cv2.resize(clip["frames"][0], (size, size), interpolation=cv2.INTER_AREA)


def quality(demo: Path, frames: dict[str, np.ndarray]) -> dict[str, dict]:
    """Demo summary metrics of every row's video and its PSNR against the ``quality`` row."""
    from PIL import Image

    from evaluation.summary import FRAME, summarize_video
    from infra.config_tree import load
    from perception.face_id import SFaceEmbedder
    from perception.faces import make_face_backend
    from preprocessing.loudness import mouth_opening

    size = load("cpu/stage3").model.resolution
    clip, reference = heldout(demo, size)
    backend, embedder = make_face_backend("yunet"), SFaceEmbedder()
    other = np.asarray(Image.open(demo / "holdout" / "other_reference.png").convert("RGB").resize((size, size)))
    base = frames["quality"].astype(np.float64)
    out = {}
    for name, video in frames.items():
        n = len(video)
        envelope = mouth_opening(clip["audio"], 16000, 25.0, n)
        s = summarize_video(video, clip["kps512"][:n] * (FRAME / 512), envelope, reference, other, backend, embedder)
        mse = np.mean((video.astype(np.float64) - base[:n]) ** 2)
        out[name] = {**s.as_dict(), "psnr_vs_quality_db": float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)}
    return out


def sd15_frame_eval_seconds() -> float:
    """Seconds per frame-evaluation of the sd15 denoising UNet on this CPU (one 4-frame window, CFG pair)."""
    import torch

    from infra.config_tree import load
    from model.build import build_modules

    torch.set_num_threads(2)
    cfg = load("sd15/stage3")
    modules = build_modules(cfg.model, pretrained=False).eval()  # random weights: only the cost is measured
    f, lat = 4, cfg.model.latent_size
    with torch.no_grad():
        ref = modules.reference_net(torch.randn(2, 4, lat, lat), timestep=0)  # one per CFG branch
        x = torch.randn(2, 4, f, lat, lat)
        audio = torch.randn(2, f, cfg.model.audio_num_queries, cfg.model.cross_attention_dim)
        start = time.perf_counter()
        modules.denoising_unet(x, torch.full((2,), 500.0), audio_tokens=audio, reference_features=ref)
        return (time.perf_counter() - start) / (2 * f)


def format_table(results: list[dict], qualities: dict[str, dict], sd15: float | None) -> str:
    head = ["row", "UNet evals / frame (full + shallow)", "s / frame", "peak RSS GiB"]
    if qualities:
        head += ["faces", "KpsDis px", "FaceSim ref", "mouth-audio r", "PSNR vs quality dB"]
    if sd15 is not None:
        head += ["sd15 s / frame (est., full passes)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        label = r["name"] + (" (default)" if r["name"] == DEFAULT_PRESET else "")
        cells = [label, f"{r['full_evals']:.1f} + {r['shallow_evals']:.1f}", f"{r['seconds_per_frame']:.3f}",
                 f"{r['peak_rss_gib']:.2f}"]
        if qualities:
            q = qualities[r["name"]]
            cells += [f"{q['face_found_rate']:.2f}", f"{q['kpsdis_px']:.1f}", f"{q['facesim_ref']:.3f}",
                      f"{q['mouth_audio_corr']:.3f}", f"{q['psnr_vs_quality_db']:.1f}"]
        if sd15 is not None:
            cells.append(f"{sd15 * r['full_evals']:.1f}" + (" + shallow" if r["shallow_evals"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished `make demo` folder (trained model + held-out)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--sd15", action="store_true", help="also time one sd15-size UNet forward")
    ap.add_argument("--quick", action="store_true", help="presets only, 25 frames")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    demo = Path(args.demo) if (Path(args.demo) / "steps" / "train_stage3.done").is_file() else None
    todo = {k: v for k, v in rows().items() if not args.quick or k in PRESETS}
    frames = 25 if args.quick else args.frames
    out_dir = Path("runs") / "bench_inference"
    out_dir.mkdir(parents=True, exist_ok=True)
    sd15 = sd15_frame_eval_seconds() if args.sd15 else None  # first: a broken sd15 setup fails in seconds
    jobs = [(name, fields, demo, frames, out_dir / f"{i}.npy") for i, (name, fields) in enumerate(todo.items())]
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        results = pool.map(run_row, jobs, chunksize=1)
    videos = {r["name"]: np.load(job[4]) for r, job in zip(results, jobs)}
    qualities = quality(demo, videos) if demo is not None else {}
    print(f"model: {'trained demo model in ' + str(demo) if demo else 'tiny preset, random weights (cost only)'}; "
          f"{frames} frames")
    print(format_table(results, qualities, sd15))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": results, "quality": qualities, "sd15_frame_eval_s": sd15},
                                              indent=2, default=float))


if __name__ == "__main__":
    main()
