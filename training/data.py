"""WebDataset training pipeline (open_clip ``get_wds_dataset`` style: a list of stages).

    shard list (index.json / brace pattern / URLs)
      -> endless epochs, each a seeded shard permutation
      -> split by rank -> split by worker          (shards; or samples when there are fewer shards than readers)
      -> tar -> samples                            (verified against index.json; warn-and-skip on a broken tar)
      -> seeded block shuffle of the *encoded* samples, resumable at any position
      -> tolerant decode (warn-and-skip)  -> [stage II/III: drop samples with has_audio=false]
      -> training example (frames or latents (+ posterior std), reference, V-Kps, lip mask, flip, audio windows)
      -> batches

Determinism and resume: every reader (rank r, worker w) owns a logical *unit* ``u = r * W + w`` with its own
seeded stream. Each sample's random choices come from ``numpy.random.default_rng([seed, u, index])`` where
``index`` is its position in the unit's shuffled stream, so the stream is a pure function of (seed, unit,
position). :class:`DataPosition` records, per unit, how many shuffled samples its delivered batches covered and
how many batches the loader delivered; resuming skips those samples (without decoding them) and rotates the
worker -> unit map so the DataLoader's round-robin continues with the unit that was next.

The block shuffle shuffles ``shuffle_buffer`` encoded samples at a time (a bijection per block), which unlike a
reservoir buffer can be fast-forwarded exactly. Shuffling before decoding also keeps the buffer small.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from model.config import ModelConfig
from preprocessing.latents import resize_frames
from training.config import DataConfig
from training.shard_check import VerifiedTarSamples, records_for_spec, shard_file

log = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# ----------------------------------------------------------------------------------------------- shard list
def list_shards(spec: str) -> list[str]:
    """``spec``: a folder with ``index.json``, a brace pattern (``a/shard-{000000..000009}.tar``), a URL,
    or several of these separated by ``::``."""
    if not spec:
        raise ValueError("data.shards: empty; give a folder with index.json, a brace pattern or URLs")
    urls: list[str] = []
    for part in spec.split("::"):
        folder = Path(part)
        if folder.is_dir():
            urls.extend(_shards_from_index(folder))
        else:
            urls.extend(wds.shardlists.expand_urls(part))
    if not urls:
        raise ValueError(f"data.shards: {spec!r} names no shards")
    return urls


def _shards_from_index(folder: Path) -> list[str]:
    """Shards listed in ``folder/index.json`` (read and version-checked by the preprocessing reader)."""
    from preprocessing.shards import read_index

    index_path = folder / "index.json"
    index = read_index(folder)
    paths = []
    for shard in index.get("shards", []):
        name = shard["name"]
        found = shard_file(folder, name)
        if found is None:
            raise ValueError(f"{index_path}: shard {name!r} not found under {folder}")
        if shard.get("num_samples", 1) > 0:
            paths.append(str(found.resolve()))
    return paths


# ----------------------------------------------------------------------------------------------- position
@dataclass
class DataPosition:
    """Saveable loader position: batches delivered and shuffled-stream positions per unit."""

    seed: int = 0
    world_size: int = 1
    num_workers: int = 1
    batches: int = 0
    positions: dict[int, int] = field(default_factory=dict)

    def advance(self, batch: dict[str, Any]) -> None:
        self.batches += 1
        self.positions[int(batch["__unit__"])] = int(batch["__position__"])

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "world_size": self.world_size, "num_workers": self.num_workers,
                "batches": self.batches, "positions": {str(k): v for k, v in self.positions.items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DataPosition:
        return cls(seed=state["seed"], world_size=state["world_size"], num_workers=state["num_workers"],
                   batches=state["batches"], positions={int(k): int(v) for k, v in state["positions"].items()})


@dataclass
class ReaderSpec:
    """What one rank's pipeline needs to know to place itself."""

    rank: int
    world_size: int
    num_workers: int  # DataLoader workers (>= 1 logical reader even when 0)
    rotation: int = 0  # resumed loaders start their round-robin at unit (rotation % num_workers)
    positions: dict[int, int] = field(default_factory=dict)

    def unit(self) -> int:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        return self.rank * self.num_workers + (worker + self.rotation) % self.num_workers

    @property
    def num_units(self) -> int:
        return self.world_size * self.num_workers


# ----------------------------------------------------------------------------------------------- stages
class EndlessShards(wds.pipeline.IterableDataset):
    """Epoch after epoch, a permutation of the shard list seeded by (seed, epoch); this reader's share of it."""

    def __init__(self, urls: list[str], seed: int, reader: ReaderSpec, resample: bool) -> None:
        self.urls, self.seed, self.reader, self.resample = list(urls), seed, reader, resample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        unit, units = self.reader.unit(), self.reader.num_units
        by_shard = len(self.urls) >= units
        epoch = 0
        while True:
            order = list(self.urls)
            random.Random(self.seed * 100_003 + epoch).shuffle(order)
            mine = order[unit::units] if by_shard else order
            for url in mine:
                yield {"url": url}
            epoch += 1
            if not self.resample:
                return


def split_samples(reader: ReaderSpec, num_shards: int):
    """Fewer shards than readers: every reader reads every shard and keeps every ``units``-th sample."""

    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        unit, units = reader.unit(), reader.num_units
        if num_shards >= units:  # EndlessShards already split by shard
            yield from samples
            return
        for i, sample in enumerate(samples):
            if i % units == unit:
                yield sample

    return stage


def block_shuffle(block: int, seed: int, reader: ReaderSpec):
    """Shuffle each block of ``block`` samples with a seeded permutation; start at the saved position."""

    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        unit = reader.unit()
        start = reader.positions.get(unit, 0)
        skip_blocks, skip_in_block = divmod(start, block)
        it = iter(samples)
        for _ in range(skip_blocks * block):  # fast-forward without keeping or decoding anything
            if next(it, None) is None:
                return
        block_no = skip_blocks
        while True:
            buf = [s for _, s in zip(range(block), it)]
            if not buf:
                return
            perm = np.random.default_rng([seed, unit, block_no]).permutation(len(buf))
            for j, k in enumerate(perm):
                if block_no == skip_blocks and j < skip_in_block:
                    continue
                sample = buf[k]
                sample["__index__"] = block_no * block + j
                sample["__unit__"] = unit
                yield sample
            block_no += 1

    return stage


@dataclass
class ClipSample:
    """A decoded clip: arrays are numpy; ``mp4`` stays encoded until frames are needed."""

    key: str
    meta: dict[str, Any]
    kps: np.ndarray  # (N, 5, 2) crop pixels
    mouth: np.ndarray  # (N, 4) crop pixels
    audio: np.ndarray | None  # (2N, D)
    latents: np.ndarray | None  # (N, 4, h, w)
    mp4: bytes | None
    index: int
    unit: int
    lips: np.ndarray | None = None  # (N, 4) lip boxes in crop pixels (format v2); None: approximated from kps
    latents_std: np.ndarray | None = None  # (N, 4, h, w) posterior std x scaling (format v2, precomputed latents)


def decode_clip(sample: dict[str, Any]) -> ClipSample:
    """Raw tar members -> :class:`ClipSample` (``preprocessing.shards.decode_sample``, video left encoded)."""
    from preprocessing.shards import decode_sample, missing_members

    key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    missing = missing_members(sample)
    if missing:
        raise ValueError(f"{key}: missing members {missing} (has {sorted(k for k in sample if k[:2] != '__')})")
    d = decode_sample(sample, decode_video=False)
    meta, n = d["meta"], int(d["meta"]["num_frames"])
    kps, mouth = d["kps"].astype(np.float32), d["mouth"].astype(np.float32)
    if kps.shape != (n, 5, 2) or mouth.shape != (n, 4):
        raise ValueError(f"{key}: kps {kps.shape} / mouth {mouth.shape} do not match num_frames={n}")
    audio = d.get("audio_features") if meta.get("has_audio") else None
    return ClipSample(key=key, meta=meta, kps=kps, mouth=mouth, audio=audio, latents=d.get("latents"),
                      mp4=bytes(d["mp4"]), index=sample["__index__"], unit=sample["__unit__"], lips=d.get("lips"),
                      latents_std=d.get("latents_std"))


MAX_CONSECUTIVE_SKIPS = 200  # an endless stream that only skips would otherwise hang silently


class _SkipCounter:
    def __init__(self, what: str) -> None:
        self.what, self.run = what, 0

    def ok(self) -> None:
        self.run = 0

    def skip(self, key: str, reason: object) -> None:
        self.run += 1
        if self.run <= 3 or self.run % 50 == 0:
            log.warning("skipping sample %s (%s): %s", key, self.what, reason)
        if self.run >= MAX_CONSECUTIVE_SKIPS:
            raise RuntimeError(f"{self.run} consecutive samples skipped ({self.what}); last: {key}: {reason}")


def tolerant_decode(samples: Iterable[dict[str, Any]]) -> Iterator[ClipSample]:
    skips = _SkipCounter("decode")
    for sample in samples:
        try:
            clip = decode_clip(sample)
        except Exception as exc:  # warn-and-skip: one broken sample must not stop training
            skips.skip(sample.get("__key__", "?"), exc)
            continue
        skips.ok()
        yield clip


def require_audio(clips: Iterable[ClipSample]) -> Iterator[ClipSample]:
    """Stages II/III learn from audio: clips with has_audio=false are skipped."""
    skips = _SkipCounter("has_audio=false")
    for clip in clips:
        if clip.audio is None:
            skips.run += 1
            if skips.run >= MAX_CONSECUTIVE_SKIPS:
                raise RuntimeError(f"{skips.run} consecutive clips without audio; do the shards have any?")
            continue
        skips.ok()
        yield clip


# ----------------------------------------------------------------------------------------------- example
def choose_frames(num_frames: int, target: int, min_distance: int, rng: np.random.Generator) -> tuple[int, int]:
    """Start of ``target`` contiguous frames and a reference index >= ``min_distance`` frames from them.

    When the clip is too short for the distance, the reference is the frame farthest from the target span."""
    if num_frames < target:
        raise ValueError(f"clip has {num_frames} frames, fewer than data.num_frames={target}")
    start = int(rng.integers(0, num_frames - target + 1))
    end = start + target - 1
    candidates = [i for i in range(num_frames) if i <= start - min_distance or i >= end + min_distance]
    if candidates:
        return start, int(rng.choice(candidates))
    _warn_once("refdist", f"clip of {num_frames} frames too short for reference distance {min_distance}; "
                          "using the farthest frame")
    far = 0 if start >= num_frames - 1 - end else num_frames - 1
    return start, far


def clip_lip_boxes(clip: ClipSample) -> np.ndarray:
    """The clip's lip boxes (format v2), or the 5-point approximation with a closed mouth (format v1, or a sample
    written without them)."""
    if clip.lips is not None:
        return clip.lips.astype(np.float32)
    from perception.lips import lip_boxes_from_corners

    _warn_once("nolips", f"{clip.key}: no lip boxes in the shard (format v1?); approximating them from the mouth "
                         "corners with a closed mouth (re-run preprocessing for the opening-aware boxes)")
    return lip_boxes_from_corners(clip.kps)


class ExampleBuilder:
    """ClipSample -> training example (a dict of tensors), with a per-sample seeded RNG."""

    def __init__(self, data: DataConfig, model: ModelConfig, seed: int) -> None:
        self.data, self.model, self.seed = data, model, seed

    def __call__(self, clip: ClipSample) -> dict[str, Any]:
        from model.audio_windows import audio_windows
        from model.vkps import flip_keypoints, render_vkps
        from perception.lips import lip_mask

        rng = np.random.default_rng([self.seed, clip.unit, clip.index, 1])
        n, f = int(clip.meta["num_frames"]), self.data.num_frames
        res, lat = self.model.resolution, self.model.latent_size
        crop = float(clip.meta.get("crop_size", 512))
        start, ref = choose_frames(n, f, self.data.reference_min_distance, rng)
        flip = bool(rng.random() < self.data.horizontal_flip)
        target_idx = list(range(start, start + f))

        use_latents = self.data.use_latents and clip.latents is not None and clip.latents.shape[-1] == lat
        if self.data.use_latents and clip.latents is not None and not use_latents:
            _warn_once("latsize", f"{clip.key}: latents {clip.latents.shape[-2:]} do not match latent size {lat}; "
                                  "encoding frames instead")
        latent_std: dict[str, Any] = {}
        if use_latents:
            target = torch.from_numpy(clip.latents[target_idx].astype(np.float32)).permute(1, 0, 2, 3)
            reference = torch.from_numpy(clip.latents[ref].astype(np.float32))
            latent_std = _latent_std(clip, target_idx, ref, target, reference)
        else:
            from perception.media import read_frames

            if clip.mp4 is None:
                raise ValueError(f"{clip.key}: no mp4 and no usable latents")
            needed = max(start + f, ref + 1)  # decode no further than the last frame used
            frames = read_frames(clip.mp4, max_frames=needed)
            if len(frames) < needed:
                raise ValueError(f"{clip.key}: mp4 decoded {len(frames)} frames, metadata says {n}")
            target = resize_frames(frames[target_idx], res)
            reference = resize_frames(frames[[ref]], res)[:, 0]

        kps = torch.from_numpy(clip.kps[target_idx] * (res / crop))
        mask = torch.from_numpy(lip_mask(clip_lip_boxes(clip)[target_idx], int(crop), lat))
        if flip:
            # Latent flips approximate flipping the image (the VAE is close to flip-equivariant).
            target, reference = target.flip(-1), reference.flip(-1)
            latent_std = {k: v.flip(-1) if torch.is_tensor(v) and v.ndim > 1 else v for k, v in latent_std.items()}
            kps = flip_keypoints(kps, res)
            mask = mask.flip(-1)  # drawn, then flipped, as the official
        radius = max(1, round(4 * res / 512))  # the official radius 4 at 512 px, as the inference pipeline
        vkps = render_vkps(kps, res, radius=radius).permute(1, 0, 2, 3).float()  # (3, F, H, W)

        if clip.audio is not None:
            feats = torch.from_numpy(clip.audio.astype(np.float32))[None]
            windows = audio_windows(feats, n, context=self.model.audio_frames_context)[0, start:start + f]
        else:
            windows = torch.zeros(f, self.model.audio_tokens_in, self.model.audio_embed_dim)
        return {
            "target": target, "reference": reference, "is_latent": use_latents,
            "vkps": vkps, "mouth_mask": mask, **latent_std,
            "audio": windows.float(), "has_audio": float(clip.audio is not None),
            "__key__": clip.key, "__index__": clip.index, "__unit__": clip.unit,
        }


def _latent_std(clip: ClipSample, target_idx: list[int], ref: int, target: torch.Tensor,
                reference: torch.Tensor) -> dict[str, Any]:
    """Posterior std of the target and reference latents (zeros, flagged unknown, when the shard has none)."""
    if clip.latents_std is None or clip.latents_std.shape != clip.latents.shape:
        return {"target_std": torch.zeros_like(target), "reference_std": torch.zeros_like(reference),
                "latent_std_known": 0.0}
    std = clip.latents_std
    return {"target_std": torch.from_numpy(std[target_idx].astype(np.float32)).permute(1, 0, 2, 3),
            "reference_std": torch.from_numpy(std[ref].astype(np.float32)), "latent_std_known": 1.0}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {e["is_latent"] for e in examples}
    if len(kinds) > 1:  # a batch must be all latents or all frames; frames are encoded in the train step
        raise ValueError("batch mixes precomputed latents and frames; set data.use_latents=false or rebuild shards")
    batch: dict[str, Any] = {k: torch.stack([e[k] for e in examples]) for k in
                             ("target", "reference", "vkps", "mouth_mask", "audio")}
    batch["has_audio"] = torch.tensor([e["has_audio"] for e in examples])
    batch["is_latent"] = kinds.pop()
    if batch["is_latent"]:
        batch.update({k: torch.stack([e[k] for e in examples]) for k in ("target_std", "reference_std")})
        batch["latent_std_known"] = torch.tensor([e["latent_std_known"] for e in examples])
    batch["__keys__"] = [e["__key__"] for e in examples]
    batch["__unit__"] = examples[-1]["__unit__"]
    batch["__position__"] = max(e["__index__"] for e in examples) + 1
    return batch


def _example_stage(builder: ExampleBuilder):
    def stage(clips: Iterable[ClipSample]) -> Iterator[dict[str, Any]]:
        skips = _SkipCounter("example")
        for clip in clips:
            try:
                example = builder(clip)
            except Exception as exc:
                skips.skip(clip.key, exc)
                continue
            skips.ok()
            yield example

    return stage


def build_pipeline(data: DataConfig, model: ModelConfig, stage: int, batch_size: int, reader: ReaderSpec,
                   urls: list[str] | None = None) -> wds.DataPipeline:
    urls = urls if urls is not None else list_shards(data.shards)
    stages: list[Any] = [
        EndlessShards(urls, data.seed, reader, data.resample),
        VerifiedTarSamples(records_for_spec(data.shards) if data.verify_checksums else {}),  # tar -> samples
        split_samples(reader, len(urls)),
        block_shuffle(data.shuffle_buffer, data.seed, reader),
        tolerant_decode,
    ]
    if stage >= 2:
        stages.append(require_audio)
    stages += [_example_stage(ExampleBuilder(data, model, data.seed)), wds.batched(batch_size, collate, partial=False)]
    return wds.DataPipeline(*stages)


def make_loader(data: DataConfig, model: ModelConfig, stage: int, batch_size: int, rank: int, world_size: int,
                position: DataPosition | None = None) -> tuple[torch.utils.data.DataLoader, DataPosition]:
    """A DataLoader over this rank's share, resumed at ``position``; returns it and the live position."""
    workers = max(data.num_workers, 1)
    if position is None:
        position = DataPosition(seed=data.seed, world_size=world_size, num_workers=workers)
    elif (position.seed, position.world_size, position.num_workers) != (data.seed, world_size, workers):
        raise ValueError(f"data position was saved with seed/world/workers {position.seed}/{position.world_size}/"
                         f"{position.num_workers}, now {data.seed}/{world_size}/{workers}; cannot resume exactly")
    reader = ReaderSpec(rank=rank, world_size=world_size, num_workers=workers, rotation=position.batches % workers,
                        positions=dict(position.positions))
    pipeline = build_pipeline(data, model, stage, batch_size, reader)
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=data.num_workers,
                                         persistent_workers=False, prefetch_factor=2 if data.num_workers else None)
    return loader, position
