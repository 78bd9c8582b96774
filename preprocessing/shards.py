"""The shard format (docs/shard-format.md, version :data:`FORMAT_VERSION`): writing and reading.

Writers: :func:`encode_sample` turns one clip's arrays into WebDataset members with deterministic bytes;
:func:`write_tar` writes members to a tar atomically (temp name + rename, fixed tar headers, so the same samples
always give the same file and sha256); :func:`build_index` assembles ``index.json``.

Readers (training, evaluation)::

    from preprocessing.shards import read_index, shard_paths, decode_sample
    import webdataset as wds
    index = read_index(out_dir)                                  # checks format_version
    ds = wds.WebDataset(shard_paths(out_dir), shardshuffle=False).map(decode_sample)
    for s in ds:  s["frames"] (F,512,512,3) uint8, s["audio_features"] (2F,D) f16, s["kps"] (F,5,2), ...

or simply ``open_dataset(out_dir)``. Readers accept every version in :data:`READABLE_VERSIONS`; members a
version does not have are absent from the decoded dict (v1: ``lips``, ``latents_std``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v2 added lips.npy and latents_std.npy; v1 members kept their meaning
SHARD_PATTERN = "shard-{:06d}.tar"
# Member names of one sample (besides __key__). Fixed order: the sample hash walks them in this order
# (members added by later versions go last, so a v1 sample hashes as it did).
MEMBERS = ("json", "mp4", "wav", "audio.npy", "kps.npy", "mouth.npy", "latents.npy", "lips.npy", "latents_std.npy")
REQUIRED_MEMBERS = ("json", "mp4", "kps.npy", "mouth.npy")  # the others depend on has_audio / has_latents / version
_VERSIONED_PACKAGES = ("av", "numpy", "opencv-python-headless", "torch", "transformers", "webdataset")


class ShardFormatError(ValueError):
    """An index or sample does not follow the shard format (message names the file/key)."""


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def safe_name(text: str) -> str:
    """A tar/WebDataset-safe token: no dots (WebDataset splits keys at the first dot) nor slashes."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def video_id_for(source: str) -> str:
    """``<stem>-<8 hex of sha1(source)>``: readable, unique per source URL/path, stable across runs."""
    stem = Path(source.rstrip("/").split("/")[-1]).stem
    return f"{safe_name(stem)[:48]}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def sample_key(video_id: str, clip_index: int) -> str:
    return f"{video_id}_c{clip_index:04d}"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_sample(
    key: str,
    meta: dict,
    mp4: bytes,
    kps: np.ndarray,
    mouth: np.ndarray,
    wav: bytes | None = None,
    audio_features: np.ndarray | None = None,
    latents: np.ndarray | None = None,
    lips: np.ndarray | None = None,
    latents_std: np.ndarray | None = None,
) -> dict[str, bytes | str]:
    """One sample's WebDataset members; checks the shapes the readers rely on.

    ``lips``: (F, 4) lip boxes (:mod:`perception.lips`); ``latents_std``: the VAE posterior's std x scaling,
    same shape as ``latents`` (posterior mean x scaling)."""
    n = int(meta["num_frames"])
    if kps.shape != (n, 5, 2) or mouth.shape != (n, 4):
        raise ShardFormatError(f"{key}: kps {kps.shape} / mouth {mouth.shape} do not match {n} frames")
    if lips is not None and lips.shape != (n, 4):
        raise ShardFormatError(f"{key}: lips {lips.shape} do not match {n} frames (need ({n}, 4))")
    if latents_std is not None and (latents is None or latents_std.shape != latents.shape):
        raise ShardFormatError(f"{key}: latents_std {latents_std.shape} given without latents of the same shape")
    if (wav is None) != (audio_features is None) or bool(meta["has_audio"]) != (wav is not None):
        raise ShardFormatError(f"{key}: has_audio={meta['has_audio']} but wav/audio features given inconsistently")
    if audio_features is not None and audio_features.shape[0] != 2 * n:
        raise ShardFormatError(f"{key}: {audio_features.shape[0]} audio vectors for {n} frames (need {2 * n})")
    sample: dict[str, bytes | str] = {"__key__": key, "json": json_bytes({**meta, "format_version": FORMAT_VERSION}),
                                      "mp4": mp4, "kps.npy": npy_bytes(kps.astype(np.float32)),
                                      "mouth.npy": npy_bytes(mouth.astype(np.float32))}
    if wav is not None:
        sample["wav"] = wav
        sample["audio.npy"] = npy_bytes(audio_features.astype(np.float16))
    if latents is not None:
        sample["latents.npy"] = npy_bytes(latents.astype(np.float16))
    if lips is not None:
        sample["lips.npy"] = npy_bytes(lips.astype(np.float32))
    if latents_std is not None:
        sample["latents_std.npy"] = npy_bytes(latents_std.astype(np.float16))
    return sample


def sample_meta(sample: dict) -> dict:
    """The metadata member of a raw or encoded sample."""
    return json.loads(sample["json"])


def missing_members(sample: dict) -> list[str]:
    """The required members a raw sample lacks (empty when it has them all)."""
    return [m for m in REQUIRED_MEMBERS if m not in sample]


def add_latents(sample: dict, latents: np.ndarray, latents_std: np.ndarray | None = None) -> dict:
    """Attach VAE latents (posterior mean x scaling; + its std x scaling) and flip ``has_latents`` in the metadata
    (re-encoding the json member)."""
    meta = json.loads(sample["json"])
    meta["has_latents"] = True
    out = dict(sample)
    out["json"] = json_bytes(meta)
    out["latents.npy"] = npy_bytes(latents.astype(np.float16))
    if latents_std is not None:
        if latents_std.shape != latents.shape:
            raise ShardFormatError(f"{sample['__key__']}: latents_std {latents_std.shape} != latents "
                                          f"{latents.shape}")
        out["latents_std.npy"] = npy_bytes(latents_std.astype(np.float16))
    return out


def sample_sha256(sample: dict) -> str:
    """sha256 over the members in :data:`MEMBERS` order (name, length, bytes), independent of tar headers."""
    h = hashlib.sha256(str(sample["__key__"]).encode() + b"\0")
    for name in MEMBERS:
        if name in sample:
            data = sample[name]
            h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
            h.update(data)
    return h.hexdigest()


def sample_bytes(sample: dict) -> int:
    return sum(len(v) for k, v in sample.items() if k != "__key__")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_tar(path: str | Path, samples: Iterable[dict]) -> Path:
    """Write samples as a WebDataset tar atomically: ``<path>.tmp-<pid>`` then rename.

    Headers are fixed (mtime 0, uid/gid 0, mode 0444) so identical samples give a byte-identical tar.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for sample in samples:
            key = str(sample["__key__"])
            for name in MEMBERS:
                if name not in sample:
                    continue
                data = sample[name]
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o444, 0, 0
                tar.addfile(info, io.BytesIO(data))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def iter_tar_samples(path: str | Path) -> Iterator[dict]:
    """Samples of a tar written by :func:`write_tar` (members grouped by key, in file order)."""
    current: dict | None = None
    with tarfile.open(path, "r") as tar:
        for info in tar:
            key, _, name = info.name.partition(".")
            data = tar.extractfile(info).read()
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[name] = data
    if current is not None:
        yield current


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=indent) + "\n")
    os.replace(tmp, path)
    return path


def pack_shards(sample_sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Deterministic greedy packing of (key, bytes) in the given order into shards of at most ``max_bytes``
    (a single larger sample gets a shard of its own)."""
    shards: list[list[str]] = []
    size = 0
    for key, nbytes in sample_sizes:
        if not shards or (size + nbytes > max_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def build_index(config: dict, shards: list[dict], samples: list[dict], totals: dict) -> dict:
    return {"format_version": FORMAT_VERSION, "created_with": package_versions(), "config": config,
            "shards": shards, "samples": samples, "totals": totals}


# ----------------------------------------------------------------------------------------------- readers


def read_index(output_dir: str | Path) -> dict:
    """``<output_dir>/index.json``, after checking its format version."""
    path = Path(output_dir) / "index.json"
    if not path.is_file():
        raise ShardFormatError(f"{path}: no index (preprocessing did not finish?)")
    index = json.loads(path.read_text())
    if index.get("format_version") not in READABLE_VERSIONS:
        raise ShardFormatError(f"{path}: format_version {index.get('format_version')!r}, this reader knows "
                               f"{list(READABLE_VERSIONS)}")
    return index


def shard_paths(output_dir: str | Path) -> list[str]:
    """Absolute paths of the shards listed in the index, in order (what ``webdataset.WebDataset`` takes)."""
    index = read_index(output_dir)
    return [str(Path(output_dir).resolve() / "shards" / s["name"]) for s in index["shards"]]


def _load_npy(data: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def decode_sample(sample: dict, decode_video: bool = True) -> dict:
    """Raw WebDataset sample (member -> bytes) -> arrays.

    Returns ``key``, ``meta`` (dict), ``frames`` (F, S, S, 3) uint8 RGB (or ``mp4`` bytes when
    ``decode_video`` is False), ``kps`` (F, 5, 2) f32, ``mouth`` (F, 4) f32, and when present ``audio``
    (N,) f32 16 kHz, ``audio_features`` (2F, D) f16, ``latents`` (F, 4, S/8, S/8) f16, ``latents_std`` (same) f16,
    ``lips`` (F, 4) f32.
    """
    from perception import media

    key = sample.get("__key__", "?")
    meta = json.loads(sample["json"])
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ShardFormatError(f"{key}: sample format_version {meta.get('format_version')!r}, reader knows "
                               f"{list(READABLE_VERSIONS)}")
    out: dict[str, Any] = {"key": key, "meta": meta, "kps": _load_npy(sample["kps.npy"]),
                           "mouth": _load_npy(sample["mouth.npy"])}
    out["frames" if decode_video else "mp4"] = media.read_frames(bytes(sample["mp4"])) if decode_video else sample["mp4"]
    if "wav" in sample:
        import soundfile as sf

        audio, _ = sf.read(io.BytesIO(sample["wav"]), dtype="float32")
        out["audio"] = audio
        out["audio_features"] = _load_npy(sample["audio.npy"])
    if "latents.npy" in sample:
        out["latents"] = _load_npy(sample["latents.npy"])
    if "latents_std.npy" in sample:
        out["latents_std"] = _load_npy(sample["latents_std.npy"])
    if "lips.npy" in sample:
        out["lips"] = _load_npy(sample["lips.npy"])
    return out


def open_dataset(output_dir: str | Path, decode_video: bool = True, **webdataset_kwargs):
    """``webdataset.WebDataset`` over the output's shards yielding :func:`decode_sample` dicts."""
    import webdataset as wds

    webdataset_kwargs.setdefault("shardshuffle", False)
    return wds.WebDataset(shard_paths(output_dir), **webdataset_kwargs).map(
        lambda s: decode_sample(s, decode_video=decode_video))
