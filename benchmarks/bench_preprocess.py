"""Preprocessing throughput: video-seconds per wall-second with 1 and 2 Ray workers, and time share per stage.

    python benchmarks/bench_preprocess.py [--data DIR] [--repeat 3] [--workers 1 2]

- Throughput: ``infra/preprocess.py`` on the sample data (good videos copied ``--repeat`` times under new names so
  the pipeline reaches a steady state), in a subprocess pinned to N cores (``taskset``-style CPU affinity, inherited
  by every Ray process) with ``num_workers=N``. Measured from the moment the models are loaded to the last commit
  (the pipeline's own ``throughput`` line); the wall time including Ray start and shard writing is shown too.
- Stage shares: the same stage functions the Ray pipeline runs, called in one process on every clip of the good
  videos: decode, detect (YuNet on a frame downscaled to ``detect_max_side``), crop+encode (track check, crop,
  h264, npy/wav members), audio features (tiny wav2vec2), write (tar).

Targets (issue 4): 2 workers >= 1.7x one worker; >= 1x real time per core (YuNet + tiny audio encoder).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prepare_data(src: Path, dst: Path, repeat: int) -> list[Path]:
    """Good sample videos (manifest 'keep'), ``repeat`` copies each under distinct names."""
    import json

    manifest = json.loads((src / "manifest.json").read_text())
    good = [f["name"] for f in manifest["files"] if f["expected"] == "keep"]
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for r in range(repeat):
        for name in good:
            target = dst / f"r{r}_{name}"
            shutil.copyfile(src / name, target)
            out.append(target)
    return out


def run_pipeline(data: Path, workers: int, overrides: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    cores = sorted(os.sched_getaffinity(0))[:workers]
    cmd = [sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(data), "--output", str(out / "o"),
           f"num_workers={workers}", "progress_every_s=30", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    total = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"preprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    m = re.search(r"throughput: ([\d.]+) video-s in ([\d.]+) s after model loading = ([\d.]+)", proc.stdout)
    return {"workers": workers, "cores": cores, "video_s": float(m.group(1)), "wall_s": float(m.group(2)),
            "rate": float(m.group(3)), "total_s": total}


def stage_profile(videos: list[Path], cfg) -> dict[str, float]:
    """Seconds per stage over all clips of ``videos``, one process, one thread."""
    import cv2
    import torch

    from perception.audio import AudioEncoder, save_tiny_wav2vec2
    from preprocessing import shards, stages
    from preprocessing.tasks import make_face_backend

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stage-"))
    encoder = AudioEncoder(save_tiny_wav2vec2(tmp / "w2v"))
    backend = make_face_backend(cfg)
    t = dict.fromkeys(["probe+audio load", "decode", "detect", "crop+encode", "audio features", "write"], 0.0)
    samples, seconds = [], 0.0

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        r = fn(*a)
        t[name] += time.perf_counter() - t0
        return r

    for video in videos:
        plan, audio = timed("probe+audio load", stages.probe_video, str(video), cfg)
        if isinstance(plan, stages.Rejection):
            continue
        seconds += plan.duration_s
        for span in plan.spans:
            start = span.start_s(plan.fps)
            frames = timed("decode", stages.decode_clip, str(video), start, span.num_frames, plan.fps)
            dets = timed("detect", stages.detect_faces, backend, frames, cfg.detect_max_side)
            seg = stages.clip_audio(audio, start, span.num_frames, plan.fps) if audio is not None else None
            feats = timed("audio features", encoder.features_for_clip, seg, span.num_frames) if seg is not None else None
            sample, _, _ = timed("crop+encode", stages.crop_and_encode, plan, span, frames, dets, seg, feats, cfg,
                                 "yunet", "tiny")
            if sample is not None:
                samples.append(sample)
    timed("write", shards.write_tar, tmp / "shard.tar", samples)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "stages": t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="sample data folder (default: build it into a temp folder)")
    ap.add_argument("--repeat", type=int, default=3, help="copies of each good video")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("overrides", nargs="*", help="preprocess overrides, e.g. encode_preset=veryfast")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from infra.config_tree import load
    from preprocessing.sample_data import build_sample_data

    src = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-sample-"))
    if not (src / "manifest.json").exists():
        build_sample_data(src, log=lambda _m: None)
    data = Path(tempfile.mkdtemp(prefix="bench-data-"))
    videos = prepare_data(src, data, args.repeat)
    cfg = load(None, [f"preprocess.{o}" for o in args.overrides]).preprocess

    prof = stage_profile(videos[: len(videos) // args.repeat], cfg)
    total = sum(prof["stages"].values())
    print(f"\nStage profile: {prof['seconds']:.1f} video-s of good sample videos, one process, one thread "
          f"(detect_max_side={cfg.detect_max_side}, encode_preset={cfg.encode_preset})")
    print(f"{'stage':<18}{'seconds':>10}{'share':>9}{'ms/frame':>10}")
    frames = prof["seconds"] * cfg.fps
    for name, sec in prof["stages"].items():
        print(f"{name:<18}{sec:>10.2f}{sec / total:>9.1%}{1000 * sec / frames:>10.2f}")
    print(f"{'total':<18}{total:>10.2f}{1:>9.1%}{1000 * total / frames:>10.2f}"
          f"   -> {prof['seconds'] / total:.2f}x real time on one core (stages only)")

    rows = [run_pipeline(data, w, args.overrides) for w in args.workers]
    print(f"\nRay pipeline on {len(videos)} videos ({rows[0]['video_s']:.1f} video-s), steady state after model loading")
    print(f"{'workers':>8}{'cores':>8}{'video-s/s':>11}{'per core':>10}{'speedup':>9}{'wall':>8}{'total':>8}")
    for r in rows:
        print(f"{r['workers']:>8}{len(r['cores']):>8}{r['rate']:>11.2f}{r['rate'] / len(r['cores']):>10.2f}"
              f"{r['rate'] / rows[0]['rate']:>9.2f}{r['wall_s']:>8.1f}{r['total_s']:>8.1f}")
    load1, load5, _ = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} cores, load average {load1:.1f} (1 min) {load5:.1f} (5 min) at the end")
    shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
