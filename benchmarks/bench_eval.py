"""Seconds per evaluated video for each evaluation metric on this machine (CPU, random weights, full-size nets).

A "video" is ``--frames`` frames (default 50 = 2 s at 25 fps) at 512², generated and ground truth, made from
a real face photo (scikit-image's astronaut, cropped to the face) with a small per-frame shift so the face
detector and the identity embedder do real work. Every metric scores both the generated and the
ground-truth copy, as ``evaluation.run`` does (SyncNet runs on both for the Ground-Truth row).

    python benchmarks/bench_eval.py [--frames 50] [--threads 2]

Face detection is timed once ("faces") because the run shares it between KpsDis, ΔFaceSim and SyncNet.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def face_video(frames: int, size: int = 512) -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut()[0:300, 100:400]  # the face region
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(frames):
        m = np.float32([[1, 0, 3 * np.sin(i / 5)], [0, 1, 2 * np.cos(i / 7)]])
        out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from evaluation import fid, fvd, syncnet
    from evaluation.facesim import face_similarity
    from evaluation.kpsdis import kps_distance
    from perception.faces import detect_per_frame, make_face_backend

    gen, gt = face_video(args.frames), face_video(args.frames)[:, ::-1].copy()
    audio = (np.random.default_rng(0).normal(scale=0.1, size=args.frames * 640)).astype(np.float32)
    rows = []

    inc = fid.FIDInception()
    fid.inception_features(inc, gen[:1])  # warm-up
    s, _ = timed(lambda: (fid.inception_features(inc, gen), fid.inception_features(inc, gt)))
    rows.append(("FID (Inception-v3 pool3, 2x frames)", s))

    det = fvd.load_i3d(None)
    s, _ = timed(lambda: (fvd.i3d_features(det, [gen]), fvd.i3d_features(det, [gt])))
    rows.append((f"FVD (I3D, 2x {args.frames // 16} clips of 16)", s))

    try:
        backend = make_face_backend("yunet")
        s_faces, (gf, tf) = timed(lambda: (detect_per_frame(backend, gen), detect_per_frame(backend, gt)))
        rows.append(("faces (YuNet, 2x frames; shared)", s_faces))
        from evaluation.config import EvalConfig
        from evaluation.scoring import make_embedder

        emb = make_embedder(EvalConfig())
        s, r = timed(lambda: face_similarity(emb, gt[0], tf[0], gen, gf, gt, tf, exclude=[0]))
        rows.append((f"ΔFaceSim (SFace; no-face {r.num_no_face_generated}/{r.num_no_face_ground_truth})", s))
        target = np.stack([f.kps for f in tf])
        s, r = timed(lambda: kps_distance([f.kps if f else None for f in gf], target, gen.shape[1:3]))
        rows.append((f"KpsDis (after detection; no-face {r.num_no_face})", s))
        boxes = [syncnet.interpolate_missing_boxes([f.box if f else None for f in fs])[0] for fs in (gf, tf)]
    except Exception as exc:  # face backend not installed: time the rest
        print(f"face metrics skipped: {exc}")
        boxes = [np.tile([128.0, 96.0, 384.0, 416.0], (args.frames, 1))] * 2

    net = syncnet.SyncNet()
    s, _ = timed(lambda: [syncnet.sync_scores(net, syncnet.syncnet_face_crops(v, b), audio)
                          for v, b in zip((gen, gt), boxes)])
    rows.append(("SyncNet (crops + MFCC + S net, gen and GT)", s))

    load = os.getloadavg()[0]
    print(f"\nseconds per evaluated video ({args.frames} frames at 512², {args.threads} threads, "
          f"load average {load:.1f} on {os.cpu_count()} cores)")
    print(f"{'metric':<58} {'s/video':>9} {'ms/frame':>9}")
    for name, sec in rows:
        print(f"{name:<58} {sec:9.2f} {1000 * sec / args.frames:9.1f}")
    print(f"{'total':<58} {sum(s for _, s in rows):9.2f}")


if __name__ == "__main__":
    main()
