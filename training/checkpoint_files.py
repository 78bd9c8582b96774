"""Which checkpoint to resume from, and whether its files are the ones that were written.

Every checkpoint folder gets a ``checkpoint.json`` (written by rank 0 once every rank saved, before ``latest`` is
moved to it): the size and sha256 (``train.checkpoint_checksums``) of every file in it. Resuming verifies it first:
an explicit ``--resume <folder>`` that does not match fails naming the file and step; ``--resume auto`` warns and
falls back to the newest older checkpoint that matches. Checkpoints written before the manifest existed are used
unverified. Rank 0 decides and tells the other ranks (the folder must be on a filesystem they all see, as DeepSpeed
requires anyway).

Train-state files hold only tensors and plain types, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint_paths import LATEST  # the layout's names live with the checkpoint resolver

log = logging.getLogger(__name__)
MANIFEST = "checkpoint.json"
_STEP = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """No usable checkpoint where one was asked for (the message names the file and step)."""


def mark_saving(folder: Path, step: int) -> None:
    """Before a save: a folder being (re)written is not resumable until :func:`write_manifest` replaces this."""
    from preprocessing.shards import write_json_atomic

    write_json_atomic(folder / MANIFEST, {"step": step, "saving": True})


def write_manifest(folder: Path, step: int, checksums: bool = True) -> Path:
    from preprocessing.shards import file_sha256, write_json_atomic

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        entry: dict[str, Any] = {"bytes": path.stat().st_size}
        if checksums:
            entry["sha256"] = file_sha256(path)
        files[path.relative_to(folder).as_posix()] = entry
    return write_json_atomic(folder / MANIFEST, {"step": step, "files": files})


def problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (naming the file), or None when it matches its manifest."""
    from preprocessing.shards import file_sha256

    if not folder.is_dir():
        return f"{folder}: no such folder"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None  # written before manifests existed: used unverified
    try:
        record = json.loads(manifest.read_text())
        if record.get("saving"):
            return f"{folder}: incomplete (its save was interrupted)"
        files = record["files"]
    except (ValueError, KeyError, AttributeError) as exc:
        return f"{manifest}: unreadable ({exc})"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{path}: {size} bytes, {entry['bytes']} recorded in {MANIFEST} (truncated or overwritten)"
        if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            return f"{path}: sha256 differs from {MANIFEST} (damaged)"
    return None


def step_of(tag: str) -> int:
    m = _STEP.match(tag)
    return int(m.group(1)) if m else -1


def choose(root: Path, resume: str) -> tuple[Path, str] | None:
    """The (checkpoints root, step tag) to resume from: ``resume`` is ``auto`` or a step folder. None: nothing to
    resume (``auto`` without a ``latest``)."""
    if resume != "auto":
        folder = Path(resume)
        issue = problem(folder)
        if issue:
            raise CheckpointError(f"--resume {folder} (step {step_of(folder.name)}): {issue}")
        return folder.parent, folder.name
    latest = root / LATEST
    if not latest.is_file():
        return None
    newest = latest.read_text().strip()
    older = sorted((p.name for p in root.glob("step-*") if p.is_dir() and step_of(p.name) < step_of(newest)),
                   key=step_of, reverse=True)
    issues = []
    for tag in [newest, *older]:
        issue = problem(root / tag)
        if issue is None:
            if issues:
                log.warning("%s; resuming from step %d (%s) instead", "; ".join(issues), step_of(tag), root / tag)
            return root, tag
        issues.append(f"checkpoint step {step_of(tag)} is unusable: {issue}")
    raise CheckpointError(f"--resume auto: no usable checkpoint under {root}: " + "; ".join(issues))


def choose_on_rank0(root: Path, resume: str, is_main: bool) -> tuple[Path, str] | None:
    """:func:`choose` decided by rank 0 and broadcast, so every rank loads the same step (or raises the same)."""
    answer: list[Any] = [None]
    if is_main:
        try:
            found = choose(root, resume)
            answer = [("ok", None if found is None else (str(found[0]), found[1]))]
        except CheckpointError as exc:
            answer = [("error", str(exc))]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(answer, src=0)
    kind, value = answer[0]
    if kind == "error":
        raise CheckpointError(value)
    return None if value is None else (Path(value[0]), value[1])


# ------------------------------------------------------------------------------------------ RNG states as tensors
def rng_states() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_train_state(path: Path) -> dict[str, Any]:
    """A train-state file, never fully unpickled. Files written before the RNG states were tensors hold numpy
    arrays: those load with only numpy's array reconstruction allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for the older layout, zip errors for a damaged file
        if "numpy" not in str(exc):
            raise CheckpointError(f"{path}: cannot read the train state ({type(exc).__name__}: {exc})") from exc
    allowed = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)
