"""What makes an output folder safe to rerun into: one job at a time, one config, each video once.

- :class:`OutputLock`: an exclusive ``flock`` on ``<output>/.lock``, held by the driver for the whole job. The
  kernel drops it when the job's process ends, however it ends, so a killed job never leaves it stuck; the file
  names the holder (pid, host, start time, command) for the error a second job gets.
- :func:`check_config`: ``work/job.json`` records the output fingerprint (``preprocessing.config.
  output_fingerprint``) of the job that wrote ``work/``; a rerun with other values refuses, naming the fields, or
  (``on_config_change=reprocess``) goes on and every video recorded with another fingerprint is processed again.
- :func:`resolve_duplicates`: byte-identical inputs under several names keep the first (by video id) and the
  others are reported as ``duplicate`` in ``rejected.jsonl``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from preprocessing import shards
from preprocessing.config import PreprocessConfig, output_fingerprint

LOCK_NAME = ".lock"
JOB_RECORD = "job.json"


class OutputInUse(RuntimeError):
    """Another job holds the output folder's lock (the message names it)."""


class ConfigChanged(ValueError):
    """The output was made with other output-affecting config values (the message names them)."""


def prepare_output(output: Path) -> Path:
    """``output`` as an absolute folder, created; a one-line error when it is a file."""
    output = Path(output).resolve()
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output}: is a file, not a folder")
    output.mkdir(parents=True, exist_ok=True)
    return output


class OutputLock:
    """``with OutputLock(output):`` -- exclusive use of ``output`` by this process, or :class:`OutputInUse`."""

    def __init__(self, output: Path) -> None:
        self.path = Path(output) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise OutputInUse(f"{self.path.parent}: another preprocessing job is using this output "
                              f"({describe_holder(holder)}); wait for it to end or choose another --output") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:1000]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: unlinking it while another job opens it would let two jobs lock two different files.
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


# ------------------------------------------------------------------------------------------------ config


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """Short stable hash of a fingerprint, stored in every video record."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in sorted(set(old) | set(new))
            if old.get(k, "<unset>") != new.get(k, "<unset>")]


def previous_fingerprint(output: Path) -> dict[str, Any] | None:
    """The fingerprint of the job that wrote ``output``: ``work/job.json``; for outputs written before it existed,
    the config in ``index.json``; ``{}`` when video records exist without either; None for a fresh output."""
    job = output / "work" / JOB_RECORD
    if job.is_file():
        return json.loads(job.read_text())["fingerprint"]
    index = output / "index.json"
    if index.is_file():
        saved = json.loads(index.read_text())
        old = {f"preprocess.{k}": v for k, v in saved.get("config", {}).items()}
        old["shard format_version"] = saved.get("format_version")
        return old
    if any((output / "work" / "videos").glob("*.json")):
        return {}
    return None


def check_config(output: Path, cfg: PreprocessConfig) -> dict[str, Any]:
    """Refuse (or, with ``on_config_change=reprocess``, allow) a rerun with other output-affecting values; record
    the current fingerprint in ``work/job.json``. Returns it."""
    current = output_fingerprint(cfg)
    old = previous_fingerprint(output)
    if old is not None:
        # Only the fields both know: a field added in a later version must not invalidate older outputs.
        common = set(old) & set(current)
        changed = (config_differences({k: old[k] for k in common}, {k: current[k] for k in common}) if old
                   else ["no config recorded in work/ (written by an older version)"])
        if changed and cfg.on_config_change == "error":
            raise ConfigChanged(f"{output}: was made with other output-affecting values ({'; '.join(changed)}); "
                                "nothing was changed. Use another --output, or rerun with "
                                "preprocess.on_config_change=reprocess to reprocess the videos made with the old ones")
        if changed:
            print(f"[preprocess] config changed ({'; '.join(changed)}): reprocessing the videos made with the old "
                  "values", flush=True)
    shards.write_json_atomic(output / "work" / JOB_RECORD, {"fingerprint": current})
    return current


# ------------------------------------------------------------------------------------------------ duplicates


def duplicate_rejection(record: dict, keeper: dict) -> dict:
    return {"source": record["source"], "clip": None, "reason": "duplicate",
            "detail": f"same content (sha256 {record['content_sha256'][:16]}) as {keeper['source']}"}


def resolve_duplicates(records: list[dict]) -> list[dict]:
    """Records (sorted by video id) with every later copy of a content hash turned into a ``duplicate`` rejection:
    no samples, one rejected row naming the kept source. Independent of processing order, hence resumable."""
    keepers: dict[str, dict] = {}
    out = []
    for rec in records:
        sha = rec.get("content_sha256")
        if not sha:
            out.append(rec)
            continue
        keeper = keepers.setdefault(sha, rec)
        if keeper is rec:
            out.append(rec)
        else:
            out.append({**rec, "samples": [], "rejected": [duplicate_rejection(rec, keeper)]})
    return out
