"""Shard format (v2, reads v1): deterministic members, atomic byte-identical tars, packing, index checks, reader
round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from perception import media
from preprocessing import shards


def make_sample(key="vid-1234abcd_c0000", n=4, has_audio=True, size=32, latents=False):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    meta = {"source": "/x/vid.mp4", "video_id": key.split("_c")[0], "clip_index": 0, "num_frames": n,
            "fps": 25.0, "has_audio": has_audio, "lips": "kps5"}
    audio = (rng.standard_normal(int(16000 * n / 25)) * 0.1).astype(np.float32)
    mean = rng.standard_normal((n, 4, size // 8, size // 8)) if latents else None
    return shards.encode_sample(
        key, meta, mp4=media.encode_mp4_bytes(frames, 25), kps=rng.uniform(0, size, (n, 5, 2)),
        mouth=rng.uniform(0, size, (n, 4)),
        wav=media.wav_bytes(audio) if has_audio else None,
        audio_features=rng.standard_normal((2 * n, 8)) if has_audio else None,
        lips=rng.uniform(0, size, (n, 4)), latents=mean,
        latents_std=rng.uniform(0.01, 0.1, mean.shape) if latents else None)


def as_v1(sample: dict) -> dict:
    """What a v1 writer produced for the same clip: no lips or posterior std, version 1."""
    meta = json.loads(sample["json"])
    meta["format_version"] = 1
    meta.pop("lips", None)
    out = {k: v for k, v in sample.items() if k not in ("lips.npy", "latents_std.npy")}
    out["json"] = shards.json_bytes(meta)
    return out


def test_keys_are_webdataset_safe_and_stable():
    vid = shards.video_id_for("s3://bucket/some.dir/My Clip.v2.mp4")
    assert "." not in vid and "/" not in vid and vid.startswith("My-Clip-v2-")
    assert vid == shards.video_id_for("s3://bucket/some.dir/My Clip.v2.mp4")
    assert vid != shards.video_id_for("s3://other/some.dir/My Clip.v2.mp4")
    assert shards.sample_key(vid, 3).endswith("_c0003")


def test_encode_sample_checks_shapes():
    with pytest.raises(shards.ShardFormatError, match="audio vectors"):
        shards.encode_sample("k", {"num_frames": 2, "has_audio": True}, b"", np.zeros((2, 5, 2)), np.zeros((2, 4)),
                             wav=b"x", audio_features=np.zeros((3, 8)))
    with pytest.raises(shards.ShardFormatError, match="kps"):
        shards.encode_sample("k", {"num_frames": 2, "has_audio": False}, b"", np.zeros((3, 5, 2)), np.zeros((2, 4)))
    with pytest.raises(shards.ShardFormatError, match="lips"):
        shards.encode_sample("k", {"num_frames": 2, "has_audio": False}, b"", np.zeros((2, 5, 2)), np.zeros((2, 4)),
                             lips=np.zeros((2, 20, 2)))
    with pytest.raises(shards.ShardFormatError, match="latents_std"):
        shards.encode_sample("k", {"num_frames": 2, "has_audio": False}, b"", np.zeros((2, 5, 2)), np.zeros((2, 4)),
                             latents=np.zeros((2, 4, 4, 4)), latents_std=np.zeros((2, 4, 2, 2)))


def test_same_sample_same_bytes_and_hash(tmp_path):
    a, b = make_sample(), make_sample()
    assert shards.sample_sha256(a) == shards.sample_sha256(b)
    shards.write_tar(tmp_path / "a.tar", [a])
    shards.write_tar(tmp_path / "b.tar", [b])
    assert shards.file_sha256(tmp_path / "a.tar") == shards.file_sha256(tmp_path / "b.tar")
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp file
    back = list(shards.iter_tar_samples(tmp_path / "a.tar"))
    assert len(back) == 1 and shards.sample_sha256(back[0]) == shards.sample_sha256(a)


def test_pack_shards_is_deterministic_greedy():
    sizes = [("a", 40), ("b", 40), ("c", 40), ("d", 200), ("e", 10)]
    assert shards.pack_shards(sizes, 100) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert shards.pack_shards([], 100) == []


def test_webdataset_reads_and_decode_sample_round_trips(tmp_path):
    out = tmp_path / "out"
    samples = [make_sample("v-00000000_c0000", latents=True), make_sample("v-00000000_c0001", has_audio=False)]
    shards.write_tar(out / "shards" / "shard-000000.tar", samples)
    index = shards.build_index({}, [{"name": "shard-000000.tar"}], [], {})
    shards.write_json_atomic(out / "index.json", index)
    assert shards.read_index(out)["format_version"] == shards.FORMAT_VERSION
    raw = list(wds.WebDataset(shards.shard_paths(out), shardshuffle=False))
    assert [r["__key__"] for r in raw] == ["v-00000000_c0000", "v-00000000_c0001"]
    assert set(raw[0]) >= {"json", "mp4", "wav", "audio.npy", "kps.npy", "mouth.npy", "lips.npy", "latents.npy",
                           "latents_std.npy"}
    assert "wav" not in raw[1] and "audio.npy" not in raw[1]
    decoded = list(shards.open_dataset(out))
    d = decoded[0]
    assert d["frames"].shape == (4, 32, 32, 3) and d["frames"].dtype == np.uint8
    assert d["audio_features"].dtype == np.float16 and d["audio_features"].shape == (8, 8)
    assert d["kps"].shape == (4, 5, 2) and d["mouth"].shape == (4, 4)
    assert d["audio"].shape == (int(16000 * 4 / 25),) and d["meta"]["format_version"] == shards.FORMAT_VERSION == 2
    assert d["lips"].shape == (4, 4) and d["lips"].dtype == np.float32
    assert d["latents"].dtype == d["latents_std"].dtype == np.float16 and d["latents_std"].shape == (4, 4, 4, 4)
    assert "audio" not in decoded[1] and decoded[1]["meta"]["has_audio"] is False
    assert "latents_std" not in decoded[1] and "latents" not in decoded[1]


def test_v1_shards_still_read(tmp_path):
    v2 = make_sample(latents=True)
    v1 = as_v1(v2)
    assert shards.sample_sha256(v1) != shards.sample_sha256(v2)
    shards.write_tar(tmp_path / "shards" / "shard-000000.tar", [v1])
    shards.write_json_atomic(tmp_path / "index.json", {**shards.build_index({}, [{"name": "shard-000000.tar"}], [],
                                                                            {}), "format_version": 1})
    assert shards.read_index(tmp_path)["format_version"] == 1
    (d,) = list(shards.open_dataset(tmp_path))
    assert d["meta"]["format_version"] == 1 and "lips" not in d and "latents_std" not in d
    np.testing.assert_array_equal(d["latents"], shards.decode_sample(v2, decode_video=False)["latents"])
    np.testing.assert_array_equal(d["mouth"], shards.decode_sample(v2, decode_video=False)["mouth"])


def test_readers_refuse_unknown_versions(tmp_path):
    shards.write_json_atomic(tmp_path / "index.json", {"format_version": 99})
    with pytest.raises(shards.ShardFormatError, match="format_version 99"):
        shards.read_index(tmp_path)
    s = make_sample()
    meta = json.loads(s["json"])
    meta["format_version"] = 0
    s["json"] = json.dumps(meta).encode()
    with pytest.raises(shards.ShardFormatError, match="format_version"):
        shards.decode_sample(s)
