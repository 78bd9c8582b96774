"""FID: Inception-v3 pool features (TF-compatible FID weights, pytorch-fid convention) + Fréchet distance.

Input convention (pytorch-fid): frames are RGB ``uint8`` ``(N, H, W, 3)``; they become floats in [0, 1],
are resized bilinearly (``align_corners=False``) to 299×299 and scaled to [-1, 1] before the network.
Features are the 2048-d output of the final average pool ("pool3"); ``dims`` 64 / 192 / 768 select the
earlier blocks pytorch-fid offers (spatially averaged), which need far fewer samples for a full-rank
covariance. Covariance: unbiased (``ddof=1``), as pytorch-fid.

Weights: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's port of the TF 2015-12-05 Inception graph),
loaded strictly from a local path. Without a path the network has random weights and
:attr:`FIDInception.random_weights` is True; callers must tag such results (``evaluation.run`` does).

The FID graph differs from torchvision's Inception-v3 in four places, patched here as pytorch-fid does:
1008 output classes; the average pools inside Mixed_5b/5c/5d, 6b–6e and 7b exclude the zero padding
(TF's ``AvgPool`` semantics); Mixed_7c pools with max instead of average.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv_inception

from evaluation.frechet import frechet_distance_from_features

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = (64, 192, 768, 2048)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv_inception.InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(tv_inception.InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, d, bp], 1)


class FIDInceptionE(tv_inception.InceptionE):
    """Mixed_7b (average pool without padding) or Mixed_7c (``max_pool=True``)."""

    def __init__(self, in_channels: int, max_pool: bool = False):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, d, bp], 1)


def fid_inception_v3() -> tv_inception.Inception3:
    """The FID Inception graph with random weights; its state-dict keys match the pytorch-fid .pth file."""
    net = tv_inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280)
    net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    for m in net.modules():  # variance-preserving init: random-weight features are O(1), not ~1e-8
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def load_fid_state_dict(net: nn.Module, path: str | Path) -> None:
    """Load the pytorch-fid weights strictly; errors name the file and the mismatching keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FID Inception weights not found (expected {FID_WEIGHTS_FILE})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors
        raise ValueError(f"{path}: not a torch state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path}: not the FID Inception weights ({exc})") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: not the FID Inception weights: missing {result.missing_keys[:5]} "
            f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})"
        )


class FIDInception(nn.Module):
    """Frames in [0, 1] ``(N, 3, H, W)`` -> ``(N, dims)`` pool features."""

    def __init__(self, weights_path: str | Path | None = None, dims: int = 2048, seed: int = 0):
        super().__init__()
        if dims not in FID_DIMS:
            raise ValueError(f"dims must be one of {FID_DIMS}, got {dims}")
        self.dims = dims
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # random weights are reproducible run to run
            net = fid_inception_v3()
        self.random_weights = not weights_path
        if weights_path:
            load_fid_state_dict(net, weights_path)
        blocks = [
            [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, 2)],
            [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, 2)],
            [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
             net.Mixed_6e],
            [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c],
        ]
        self.blocks = nn.Sequential(*[nn.Sequential(*b) for b in blocks[: FID_DIMS.index(dims) + 1]])
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images01, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.blocks(2 * x - 1)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _check_frames(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected RGB frames (N, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 frames, got {frames.dtype}")
    return frames


def inception_features(
    model: FIDInception, frames: np.ndarray, batch_size: int = 16, name: str = "frames"
) -> np.ndarray:
    """Pool features (float64 ``(N, dims)``) of RGB uint8 frames ``(N, H, W, 3)``."""
    frames = _check_frames(frames, name)
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(frames), batch_size):
        batch = torch.from_numpy(frames[i : i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
        out.append(model(batch).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dims))


def fid_from_features(gen_features: np.ndarray, gt_features: np.ndarray, allow_rank_deficient: bool = True) -> float:
    """FID of two per-frame feature sets (pytorch-fid: unbiased covariance)."""
    return frechet_distance_from_features(
        gen_features, gt_features, ddof=1, allow_rank_deficient=allow_rank_deficient,
        names=("FID generated frames", "FID ground-truth frames"),
    )
