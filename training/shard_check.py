"""Verified shard reads (``data.verify_checksums``, on by default): local shards listed in an ``index.json`` are
checked against the sha256 and size it records before their samples are used.

A shard that matches is read as it is (checked once per reader process). One that does not (truncated, damaged,
rewritten) is reported and read sample by sample: each sample's own sha256 (``index.json`` ``samples[].sha256``,
the hash ``preprocessing.shards.sample_sha256`` defines) must match or the sample is dropped, and the report says
how many of the shard's samples were lost. URLs and brace patterns without an index are read unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardRecord:
    """What ``index.json`` says about one shard."""

    path: str
    bytes: int | None
    sha256: str | None
    num_samples: int
    samples: dict[str, str] = field(default_factory=dict)  # key -> sample sha256


def shard_file(folder: Path, name: str) -> Path | None:
    """Where a shard named in ``folder/index.json`` lives: beside it or in ``shards/``."""
    return next((p for p in (folder / name, folder / "shards" / name) if p.is_file()), None)


def records_for_spec(spec: str) -> dict[str, ShardRecord]:
    """Records of every local shard listed by an ``index.json`` among the ``::``-joined parts of ``data.shards``."""
    from preprocessing.shards import read_index

    out: dict[str, ShardRecord] = {}
    for part in spec.split("::"):
        folder = Path(part)
        if not (folder / "index.json").is_file():
            continue
        index = read_index(folder)
        paths = {s["name"]: str(p.resolve()) for s in index.get("shards", []) if (p := shard_file(folder, s["name"]))}
        out.update(index_records(index, paths))
    return out


def index_records(index: dict, shard_paths: dict[str, str]) -> dict[str, ShardRecord]:
    """``shard_paths``: shard name -> resolved path (as the shard list gives it) -> path -> record."""
    by_shard: dict[str, dict[str, str]] = {}
    for row in index.get("samples", []):
        if row.get("shard") and row.get("sha256"):
            by_shard.setdefault(row["shard"], {})[row["key"]] = row["sha256"]
    out = {}
    for shard in index.get("shards", []):
        path = shard_paths.get(shard["name"])
        if path is not None:
            out[path] = ShardRecord(path, shard.get("bytes"), shard.get("sha256"), int(shard.get("num_samples", 0)),
                                    by_shard.get(shard["name"], {}))
    return out


def shard_problem(record: ShardRecord) -> str | None:
    """Why the file does not match its record (size first: cheap), or None."""
    from preprocessing.shards import file_sha256

    path = Path(record.path)
    size = path.stat().st_size
    if record.bytes is not None and size != record.bytes:
        return f"{size} bytes, index.json records {record.bytes}"
    if record.sha256 and file_sha256(path) != record.sha256:
        return "sha256 differs from index.json"
    return None


def _tar_samples(url: str) -> Iterator[dict[str, Any]]:
    return wds.tarfile_to_samples(handler=wds.warn_and_continue)(iter([{"url": url}]))


class VerifiedTarSamples:
    """Pipeline stage: ``{"url": ...}`` items -> raw samples, verified against ``records`` where they have one."""

    def __init__(self, records: dict[str, ShardRecord]) -> None:
        self.records = records
        self.status: dict[str, str | None] = {}  # url -> None (verified) or its problem; per reader process
        self.unusable: set[str] = set()  # shards none of whose samples matched: an endless stream would spin on them

    def __call__(self, urls: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in urls:
            url = item["url"]
            record = self.records.get(url)
            if record is None:
                yield from _tar_samples(url)
                continue
            if url not in self.status:
                self.status[url] = shard_problem(record)
            if self.status[url] is None:
                yield from _tar_samples(url)
            else:
                yield from self._salvage(record, self.status[url])
                if len(self.unusable) == len(self.records):
                    raise RuntimeError(f"no sample of any shard matches its index.json checksums ({len(self.records)} "
                                       f"shards, e.g. {url}: {self.status[url]}); rebuild the shards or set "
                                       "data.verify_checksums=false")

    def _salvage(self, record: ShardRecord, problem: str) -> Iterator[dict[str, Any]]:
        from preprocessing.shards import sample_sha256

        good = 0
        for sample in _tar_samples(record.path):
            if record.samples.get(sample.get("__key__")) == sample_sha256(sample):
                good += 1
                yield sample
        if good == 0:
            self.unusable.add(record.path)
        lost = max(record.num_samples - good, 0)
        log.warning("%s: %s; %d of %d samples lost (the %d whose sha256 matches index.json are used)",
                    record.path, problem, lost, record.num_samples, good)
