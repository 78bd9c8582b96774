"""Tiny random-weight insightface-shaped ONNX models (SCRFD detector, ArcFace recognizer, 106-point landmarks)
for tests and demos.

No insightface weights are obtainable offline. These models have the exact input/output layout insightface's
``model_zoo`` routes on (a detector: 9 outputs = scores, box distances and keypoint offsets at strides 8/16/32
with 2 anchors; a recognizer: one 112x112x3 input, one 512-d output; a landmark model like buffalo_l's
``2d106det``: one 192x192x3 input, 212 outputs = 106 (x, y) in [-1, 1] of the crop), so the real loading code
paths run; their outputs are arbitrary. Put them where a real pack goes:

    python -m tests.tiny_face_models --root /tmp/insightface --pack tiny   # -> /tmp/insightface/models/tiny/
"""

from __future__ import annotations

import argparse
from pathlib import Path

STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
DETECTOR_FILE = "det_tiny_scrfd.onnx"
RECOGNIZER_FILE = "w_tiny_arcface.onnx"
LANDMARK_FILE = "2d106_tiny.onnx"


def _tiny_scrfd(width: int, seed: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TinySCRFD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList(nn.Conv2d(3 if i == 0 else width, width, 3, stride=2, padding=1)
                                      for i in range(5))  # strides 2, 4, 8, 16, 32
            self.score = nn.ModuleList(nn.Conv2d(width, NUM_ANCHORS, 1) for _ in STRIDES)
            self.bbox = nn.ModuleList(nn.Conv2d(width, NUM_ANCHORS * 4, 1) for _ in STRIDES)
            self.kps = nn.ModuleList(nn.Conv2d(width, NUM_ANCHORS * 10, 1) for _ in STRIDES)
            for head in self.score:  # spread the random scores over (0, 1) so score thresholds matter
                nn.init.normal_(head.weight, std=2.0)
                nn.init.constant_(head.bias, -1.0)

        def forward(self, x):
            feats = []
            for i, conv in enumerate(self.down):
                x = F.relu(conv(x))
                if i >= 2:
                    feats.append(x)

            def flat(t, k):  # (1, A*k, h, w) -> (h*w*A, k): pixel-major, anchor-minor, as insightface reads it
                return t.permute(0, 2, 3, 1).reshape(-1, k)

            scores = [flat(torch.sigmoid(h(f)), 1) for h, f in zip(self.score, feats)]
            boxes = [flat(F.softplus(h(f)), 4) for h, f in zip(self.bbox, feats)]  # distances > 0 (in strides)
            kps = [flat(h(f), 10) for h, f in zip(self.kps, feats)]
            return (*scores, *boxes, *kps)

    torch.manual_seed(seed)
    return TinySCRFD().eval()


def _tiny_arcface(width: int, dim: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 2, dim),
    ).eval()


def _tiny_landmark106(width: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=4, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=4, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 212), nn.Tanh(),  # points stay inside the crop
    ).eval()


def export_tiny_scrfd(path: str | Path, width: int = 8, seed: int = 0) -> Path:
    """A 9-output SCRFD-layout detector with dynamic input height/width."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    dynamic = {"input.1": {2: "height", 3: "width"}, **{n: {0: f"anchors_{n.split('_')[1]}"} for n in names}}
    torch.onnx.export(_tiny_scrfd(width, seed), torch.zeros(1, 3, 64, 64), str(path), input_names=["input.1"],
                      output_names=names, dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


def export_tiny_arcface(path: str | Path, width: int = 8, dim: int = 512, seed: int = 0) -> Path:
    """An ArcFace-layout recognizer: (N, 3, 112, 112) -> (N, dim)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_tiny_arcface(width, dim, seed), torch.zeros(1, 3, 112, 112), str(path),
                      input_names=["input.1"], output_names=["embedding"],
                      dynamic_axes={"input.1": {0: "None"}, "embedding": {0: "None"}}, opset_version=17, dynamo=False)
    return path


def export_tiny_landmark106(path: str | Path, width: int = 8, seed: int = 0) -> Path:
    """A 2d106det-layout landmark model: (1, 3, 192, 192) -> (1, 212)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_tiny_landmark106(width, seed), torch.zeros(1, 3, 192, 192), str(path),
                      input_names=["data"], output_names=["fc1"], opset_version=17, dynamo=False)
    return path


def make_tiny_insightface_pack(root: str | Path, pack: str = "tiny", landmarks: bool = True) -> Path:
    """``root/models/<pack>/`` with a tiny detector, recognizer and (``landmarks``) 106-point landmark model;
    returns the pack folder."""
    folder = Path(root) / "models" / pack
    export_tiny_scrfd(folder / DETECTOR_FILE)
    export_tiny_arcface(folder / RECOGNIZER_FILE)
    if landmarks:
        export_tiny_landmark106(folder / LANDMARK_FILE)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write a tiny random insightface-shaped model pack")
    ap.add_argument("--root", required=True)
    ap.add_argument("--pack", default="tiny")
    args = ap.parse_args(argv)
    print(make_tiny_insightface_pack(args.root, args.pack))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
