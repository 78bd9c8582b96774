"""Adding VAE latents to shards written without them; the fitted VAE the CPU preset trains on."""

import json

import numpy as np
import torch
from diffusers import AutoencoderKL

from preprocessing import shards as fmt
from preprocessing.latents import add_latents, encode_frames
from tests.synthetic_shards import write_synthetic_shards


def _tiny_vae(folder):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, mid_block_add_attention=False, scaling_factor=0.5)
    vae.save_pretrained(folder)
    return AutoencoderKL.from_pretrained(folder).eval()


def test_latents_are_added_and_everything_else_is_kept(tmp_path):
    src = write_synthetic_shards(tmp_path / "src", clips=3, frames=8, size=64, latent_size=None, per_shard=2)
    vae = _tiny_vae(tmp_path / "vae")
    index = add_latents(src, tmp_path / "out", tmp_path / "vae", resolution=32, log=lambda *_: None)
    assert index["latents"]["resolution"] == 32 and index["latents"]["scaling_factor"] == 0.5
    before = {s["__key__"]: s for name in fmt.shard_paths(src) for s in fmt.iter_tar_samples(name)}
    after = {s["__key__"]: s for name in fmt.shard_paths(tmp_path / "out") for s in fmt.iter_tar_samples(name)}
    assert before.keys() == after.keys()
    for key, sample in after.items():
        kept = {k: v for k, v in sample.items() if k not in ("latents.npy", "latents_std.npy", "json")}
        assert kept == {k: v for k, v in before[key].items() if k != "json"}
        decoded = fmt.decode_sample(sample)
        assert decoded["meta"]["has_latents"] is True
        mean, std = encode_frames(vae, decoded["frames"], 32)
        assert decoded["latents"].shape == decoded["latents_std"].shape == (8, 4, 8, 8)
        np.testing.assert_array_equal(decoded["latents"], mean)
        np.testing.assert_array_equal(decoded["latents_std"], std)
        assert (std > 0).all()
    # The index's checksums describe the new files.
    for row in index["shards"]:
        assert fmt.file_sha256(tmp_path / "out" / "shards" / row["name"]) == row["sha256"]
    rows = {r["key"]: r["sha256"] for r in json.loads((tmp_path / "out" / "index.json").read_text())["samples"]}
    assert rows == {k: fmt.sample_sha256(s) for k, s in after.items()}


def test_rerun_keeps_finished_shards(tmp_path):
    src = write_synthetic_shards(tmp_path / "src", clips=2, frames=4, size=32, latent_size=None, per_shard=1)
    _tiny_vae(tmp_path / "vae")
    add_latents(src, tmp_path / "out", tmp_path / "vae", resolution=32, log=lambda *_: None)
    first = tmp_path / "out" / "shards" / "shard-000000.tar"
    stamp = first.stat().st_mtime_ns
    (tmp_path / "out" / "shards" / "shard-000001.tar").unlink()  # as if the job was killed after one shard
    add_latents(src, tmp_path / "out", tmp_path / "vae", resolution=32, log=lambda *_: None)
    assert first.stat().st_mtime_ns == stamp
    assert (tmp_path / "out" / "shards" / "shard-000001.tar").is_file()
