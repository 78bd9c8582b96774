"""I3D (Inflated Inception-v1, Carreira & Zisserman 2017) with the call signature of StyleGAN-V's TorchScript.

The real FVD detector is the TorchScript file ``i3d_torchscript.pt`` (Kinetics-400, ported from the TF-Hub
model the original FVD code uses); :func:`evaluation.fvd.load_i3d` loads it with ``torch.jit.load``. This
module is the *random-weight* stand-in used when no file is given (results are then tagged
``random_weights``): the same architecture and the same call ``model(videos, rescale=, resize=,
return_features=)`` returning 400-d pre-softmax logits, so the FVD plumbing, shapes and timings are real.

``videos``: float ``(b, 3, t, h, w)``; with ``rescale=True`` in [0, 255] (mapped to [-1, 1]), otherwise
already in [-1, 1]; ``resize=True`` resizes every frame to 224×224 (bilinear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400


class Unit3D(nn.Module):
    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn_relu: bool = True):
        super().__init__()
        pad = tuple(k // 2 for k in kernel)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, bias=not bn_relu)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if bn_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(self.bn(x)) if self.bn is not None else x


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1 = nn.Sequential(Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3)))
        self.b2 = nn.Sequential(Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3)))
        self.b3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), Unit3D(cin, c[5]))
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], 1)


# Mixed blocks of Inception-v1: (name, channels) with maxpools in between, as in the I3D paper.
_MIXED = {
    "3b": (64, 96, 128, 16, 32, 32), "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64), "4c": (160, 112, 224, 24, 64, 64), "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64), "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128), "5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """``width`` < 1 shrinks every channel count (tests); 1.0 is full size (12.7 M parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0):
        super().__init__()

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        layers: list[nn.Module] = [
            Unit3D(3, w(64), (7, 7, 7), (2, 2, 2)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            Unit3D(w(64), w(64)),
            Unit3D(w(64), w(192), (3, 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
        ]
        cin = w(192)
        for name, chans in _MIXED.items():
            if name == "4b":
                layers.append(nn.MaxPool3d(3, 2, padding=1))
            if name == "5b":
                layers.append(nn.MaxPool3d(2, 2))
            block = InceptionModule(cin, tuple(w(c) for c in chans))
            layers.append(block)
            cin = block.out_channels
        self.features = nn.Sequential(*layers)
        self.logits = Unit3D(cin, num_classes, bn_relu=False)
        for m in self.modules():  # variance-preserving random init: O(1) features rather than vanishing ones
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(
        self, videos: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        x = videos.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            b, c, t, h, wd = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, wd)
            frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
            x = frames.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        x = self.features(x)
        x = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))  # spatial average, keep time
        logits = self.logits(x).mean(dim=(2, 3, 4))  # (b, 400): averaged over time, before softmax
        return logits if return_features else F.softmax(logits, dim=1)
