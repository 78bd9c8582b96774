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
from training.config import DataConfig
from training.examples import ClipSample, ExampleBuilder, collate
from training.shard_check import VerifiedTarSamples, records_for_spec, shard_file

log = logging.getLogger(__name__)

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
