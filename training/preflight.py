"""Checks that run before DeepSpeed starts, so a wrong path is a one-line error naming it rather than a warning
loop of an endless loader, or a traceback after minutes of setup."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def is_local(url: str) -> bool:
    return ("://" not in url and not url.startswith("pipe:")) or url.startswith("file://")


def check_shards(spec: str, verify: bool) -> list[str]:
    """The shard list of ``data.shards``; raises naming the path when it is missing or lists nothing. With
    ``verify``, local shards whose size differs from their ``index.json`` are reported now (the reader drops
    their damaged samples, see ``training.shard_check``)."""
    from training.data import list_shards
    from training.shard_check import records_for_spec

    for part in spec.split("::"):
        if part and is_local(part) and not any(c in part for c in "{*?[") and not Path(part).exists():
            raise FileNotFoundError(f"data.shards: {part}: no such file or folder")
    urls = list_shards(spec)
    missing = [u for u in urls if is_local(u) and not Path(u.removeprefix("file://")).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"data.shards={spec!r}: {missing[0]}: no such shard{more}")
    if verify:
        for record in records_for_spec(spec).values():
            size = Path(record.path).stat().st_size
            if record.bytes is not None and size != record.bytes:
                log.warning("%s: %d bytes, index.json records %d: damaged or truncated; its samples that do not "
                            "match their sha256 will be skipped and counted", record.path, size, record.bytes)
    return urls


def check_output_dir(path: str | Path) -> None:
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"train.output_dir: {path}: is a file, not a folder")


def check_inputs(cfg: Any, resume: str | None) -> None:
    """Everything a run reads or writes that can be checked without DeepSpeed."""
    check_output_dir(cfg.train.output_dir)
    check_shards(cfg.data.shards, cfg.data.verify_checksums)
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
    if cfg.train.init_from:
        from training.trainer import resolve_init_weights

        resolve_init_weights(cfg.train.init_from)
