"""Face backend / embedder cost per 512x512 frame on CPU (single thread). Prints a table.

    python benchmarks/bench_faces.py [--frames 50]

Frames are the astronaut photo moved along a smooth path (one real face per frame). Both wall time and
process CPU time are reported: on a shared machine the CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import cv2
import numpy as np


def _frames(n: int) -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    out = []
    for i in range(n):
        m = np.array([[1.0, 0, 12 * np.sin(i / 7)], [0, 1.0, 8 * np.cos(i / 5)]], np.float32)
        out.append(cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT_101))
    return np.stack(out)


def _time(fn, items) -> tuple[float, float]:
    fn(items[0])  # warm-up (session creation, input-size setup)
    w0, c0 = time.perf_counter(), time.process_time()
    for x in items:
        fn(x)
    n = len(items)
    return (time.perf_counter() - w0) / n * 1e3, (time.process_time() - c0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    warnings.simplefilter("ignore", FutureWarning)
    from perception.face_id import ArcFaceEmbedder, SFaceEmbedder
    from perception.faces import make_face_backend
    from tests.tiny_face_models import make_tiny_insightface_pack

    frames = _frames(args.frames)
    yunet = make_face_backend("yunet")
    face = yunet.detect(frames[0])[0]
    rows = [("yunet detect (512x512)", *_time(yunet.detect, frames))]
    sface = SFaceEmbedder()
    rows.append(("sface embed (align + 128-d)", *_time(lambda f: sface.embed(f, face), frames)))
    with tempfile.TemporaryDirectory() as d:
        pack = make_tiny_insightface_pack(d, "tiny")
        scrfd = make_face_backend("insightface", root=d, pack="tiny", det_size=(640, 640), landmarks=False)
        rows.append(("insightface SCRFD-shape, TINY random (640 det)", *_time(scrfd.detect, frames)))
        arc = ArcFaceEmbedder(pack)
        rows.append(("arcface-shape TINY random embed", *_time(lambda f: arc.embed(f, face), frames)))
    print(f"{'stage':48s} {'wall ms/frame':>14s} {'cpu ms/frame':>13s}")
    for name, wall, cpu in rows:
        print(f"{name:48s} {wall:14.1f} {cpu:13.1f}")
    print(f"({args.frames} frames; tiny models measure the insightface code path, not real SCRFD/ArcFace cost)")


if __name__ == "__main__":
    main()
