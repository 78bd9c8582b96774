"""Latents per step: posterior draws (train.latent_sampling=sample) against the stored or computed posterior
moments, the mean mode, and shards of format v1 (no std, no lip boxes)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from infra.config_tree import load
from training.data import make_loader
from training.step import encode_latents, step_latents

DRAWS = 400


def _cfg(shards, *extra):
    return load("tiny/stage1", [f"data.shards={shards}", "data.num_frames=4", "train.stage=2", "data.num_workers=0",
                                "data.horizontal_flip=0", *extra])


def _batch(cfg):
    loader, _ = make_loader(cfg.data, cfg.model, cfg.train.stage, 2, 0, 1)
    return next(iter(loader))


def _z_stats(draws: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float]:
    z = (draws - mean) / std
    return float(z.mean()), float(z.var())


def test_sampling_draws_from_the_stored_posterior_and_mean_mode_does_not(synthetic_shards):
    cfg = _cfg(synthetic_shards)
    batch = _batch(cfg)
    assert batch["is_latent"] and batch["latent_std_known"].tolist() == [1.0, 1.0]
    g = torch.Generator().manual_seed(0)
    draws = [step_latents(batch, None, cfg.train, g, torch.device("cpu"), 0.18215) for _ in range(DRAWS)]
    for i, name in enumerate(("target", "reference")):
        stacked = torch.stack([d[i] for d in draws])
        mean, std = batch[name], batch[f"{name}_std"]
        z_mean, z_var = _z_stats(stacked, mean, std)
        n = stacked.numel()
        assert abs(z_mean) < 5 / n ** 0.5 and abs(z_var - 1) < 5 * (2 / n) ** 0.5, (name, z_mean, z_var)
        per_element = stacked.std(0) / std  # each element has its own std
        assert float(per_element.mean()) == pytest.approx(1.0, abs=0.02)
        assert float(per_element.min()) > 0.8 and float(per_element.max()) < 1.2
    mean_cfg = _cfg(synthetic_shards, "train.latent_sampling=mean")
    target, reference = step_latents(batch, None, mean_cfg.train, g, torch.device("cpu"), 0.18215)
    assert torch.equal(target, batch["target"]) and torch.equal(reference, batch["reference"])


def test_sampling_from_the_vae_when_frames_are_encoded_in_the_step(synthetic_frame_shards):
    from model.build import build_vae

    cfg = _cfg(synthetic_frame_shards)
    vae = build_vae(cfg.model).eval().requires_grad_(False)
    frames = _batch(cfg)["target"][:1, :, :2]  # (1, 3, 2, 64, 64)
    with torch.no_grad():
        flat = frames.permute(0, 2, 1, 3, 4).reshape(2, 3, 64, 64)
        posterior = vae.encode(flat).latent_dist
    scale = 0.18215
    mean = (posterior.mean * scale).reshape(1, 2, 4, 8, 8).permute(0, 2, 1, 3, 4)
    std = (posterior.std * scale).reshape(1, 2, 4, 8, 8).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(encode_latents(vae, frames, scale), mean)  # no generator: the mean
    g = torch.Generator().manual_seed(1)
    eps = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))  # the draw the step makes
    exact = mean + std * eps.reshape(1, 2, 4, 8, 8).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(encode_latents(vae, frames, scale, g), exact)
    stacked = torch.stack([encode_latents(vae, frames, scale, g) for _ in range(20)])  # the VAE is the slow part
    z_mean, z_var = _z_stats(stacked, mean, std)
    n = stacked.numel()
    assert abs(z_mean) < 5 / n ** 0.5 and abs(z_var - 1) < 5 * (2 / n) ** 0.5, (z_mean, z_var)


def rewrite_as_v1(src, dst):
    """The same shards as a v1 writer made them: no lips.npy / latents_std.npy, format_version 1, and an index
    whose checksums describe the rewritten files."""
    from preprocessing.shards import file_sha256, iter_tar_samples, json_bytes, sample_sha256, write_tar

    index = json.loads((src / "index.json").read_text())
    sample_sha = {}
    for shard in index["shards"]:
        samples = []
        for s in iter_tar_samples(src / "shards" / shard["name"]):
            meta = json.loads(s["json"])
            meta["format_version"] = 1
            meta.pop("lips", None)
            samples.append({**{k: v for k, v in s.items() if k not in ("lips.npy", "latents_std.npy")},
                            "json": json_bytes(meta)})
            sample_sha[samples[-1]["__key__"]] = sample_sha256(samples[-1])
        path = write_tar(dst / "shards" / shard["name"], samples)
        shard.update(bytes=path.stat().st_size, sha256=file_sha256(path))
    for row in index["samples"]:
        row["sha256"] = sample_sha[row["key"]]
    (dst / "index.json").write_text(json.dumps({**index, "format_version": 1}))
    return dst


def test_v1_shards_train_on_the_mean_with_an_approximate_lip_mask(synthetic_shards, tmp_path, caplog, monkeypatch):
    from perception.lips import lip_boxes_from_corners, lip_mask
    from preprocessing.shards import open_dataset
    from training import step

    monkeypatch.setattr(step, "_warned", set())
    v1 = rewrite_as_v1(synthetic_shards, tmp_path / "v1")
    cfg, cfg2 = _cfg(v1), _cfg(synthetic_shards)
    old, new = _batch(cfg), _batch(cfg2)
    assert old["__keys__"][0].split(":")[1] == new["__keys__"][0].split(":")[1]
    assert torch.equal(old["target"], new["target"]) and old["latent_std_known"].tolist() == [0.0, 0.0]
    assert float(old["target_std"].abs().max()) == 0.0
    with caplog.at_level(logging.WARNING):
        target, _ = step_latents(old, None, cfg.train, torch.Generator().manual_seed(0), torch.device("cpu"), 1.0)
    assert torch.equal(target, old["target"]) and "store only the posterior mean" in caplog.text
    # The lip mask comes from the mouth corners (closed mouth) instead of the stored lip boxes.
    key = old["__keys__"][0].split(":")[1]
    sample = next(s for s in open_dataset(v1, decode_video=False) if s["key"] == key)
    assert old["mouth_mask"][0].sum() > 0 and not torch.equal(old["mouth_mask"], new["mouth_mask"])
    approx = lip_mask(lip_boxes_from_corners(sample["kps"]), 64, 8)[0]
    frames = [f for f in range(sample["kps"].shape[0]) if np.allclose(approx[f], old["mouth_mask"][0, 0, 0])]
    assert frames, "the v1 mask is the 5-point approximation of one of the clip's frames"
