"""Add VAE latents to shards that were written without them (or with another VAE / resolution).

    python -m preprocessing.latents --shards <in> --output <out> --vae <diffusers AutoencoderKL folder> \
        [--resolution 64] [--batch 32]

Training then reads the latents instead of decoding and encoding video every step (``data.use_latents``).
Preprocessing can compute latents itself (``preprocess.precompute_latents``), but only with a VAE that exists
before it runs; the CPU preset fits its VAE to the crops preprocessing wrote, so this adds them afterwards.

Each sample's frames are resized to ``--resolution`` (bilinear, antialiased: the training loader's resize) and
encoded as the posterior mean and std x the VAE's ``scaling_factor`` (float16 ``latents.npy`` and
``latents_std.npy``, so training can sample the posterior); the metadata says ``has_latents``. Every other member
is kept byte for byte. Output: ``<out>/shards/`` (same names) and ``<out>/index.json`` (the input's, with new
sample and shard checksums and a ``latents`` entry saying which VAE and resolution). Shards already written
to ``<out>`` by an interrupted run are kept; rerunning finishes the rest.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing import shards as fmt


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (3, n, size, size) float in [-1, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(1, 0, 2, 3).contiguous()


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray, size: int, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std x scaling factor, each (n, C, size/d, size/d) float16, of uint8 frames (n, H, W, 3)."""
    x = resize_frames(frames, size).permute(1, 0, 2, 3)
    scale = float(vae.config.scaling_factor)
    means, stds = [], []
    for i in range(0, len(x), batch):
        posterior = vae.encode(x[i:i + batch]).latent_dist
        means.append(posterior.mean * scale)
        stds.append(posterior.std * scale)
    return torch.cat(means).half().numpy(), torch.cat(stds).half().numpy()


def add_latents_to_sample(sample: dict, vae, size: int) -> dict:

    mean, std = encode_frames(vae, fmt.decode_sample(sample)["frames"], size)
    return fmt.add_latents(sample, mean, std)


def add_latents(shards: str | Path, output: str | Path, vae_folder: str | Path, resolution: int,
                log=print) -> dict:
    """Write ``output`` = ``shards`` plus latents; returns the new index."""
    from diffusers import AutoencoderKL
    from tqdm import tqdm

    shards, output = Path(shards), Path(output)
    if output.resolve() == shards.resolve():
        raise ValueError(f"{output}: write the shards with latents to a new folder, not over their source")
    index = fmt.read_index(shards)
    if not (Path(vae_folder) / "config.json").is_file():
        raise FileNotFoundError(f"{vae_folder}: not a diffusers AutoencoderKL folder (no config.json)")
    vae = AutoencoderKL.from_pretrained(vae_folder).eval()
    new_index = copy.deepcopy(index)
    sample_sha: dict[str, str] = {}
    for row in tqdm(new_index["shards"], desc="latents", unit="shard"):
        src, dst = shards / "shards" / row["name"], output / "shards" / row["name"]
        if not dst.is_file():
            fmt.write_tar(dst, [add_latents_to_sample(s, vae, resolution) for s in fmt.iter_tar_samples(src)])
        for s in fmt.iter_tar_samples(dst):
            sample_sha[s["__key__"]] = fmt.sample_sha256(s)
        row.update(bytes=dst.stat().st_size, sha256=fmt.file_sha256(dst))
    for row in new_index["samples"]:
        row["sha256"] = sample_sha[row["key"]]
    new_index["latents"] = {"vae": str(Path(vae_folder).resolve()), "resolution": resolution,
                            "scaling_factor": float(vae.config.scaling_factor), "source": str(shards.resolve())}
    fmt.write_json_atomic(output / "index.json", new_index)
    log(f"latents: {len(sample_sha)} samples at {resolution} px -> {output / 'index.json'}")
    return new_index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.latents", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True, help="preprocessing output folder (index.json + shards/)")
    ap.add_argument("--output", required=True, help="new output folder for the shards with latents")
    ap.add_argument("--vae", required=True, help="diffusers AutoencoderKL folder")
    ap.add_argument("--resolution", type=int, default=512, help="frame size the latents encode (model.resolution)")
    args = ap.parse_args(argv)
    try:
        add_latents(args.shards, args.output, args.vae, args.resolution)
    except (fmt.ShardFormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
