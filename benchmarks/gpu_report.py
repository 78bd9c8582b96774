"""The pieces of ``benchmarks/gpu_check.py`` that are not measurements: sizes, the time budget, the report.

Kept apart so the budget's arithmetic and the report's layout are tested without running a model.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


# ------------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """What one run measures. ``FULL``: the real thing on a GPU; ``DRY``: the same code paths, tiny, on the CPU."""

    preset: str  # config preset: configs/<preset>/stage{1,2,3}.yaml
    device: str
    train_frames: int  # frames of a stage II/III sample (stage I: 1)
    train_warmup: int  # untimed optimizer steps first (allocations, DeepSpeed's buffers)
    train_steps: int  # timed steps wanted; fewer when the budget runs short
    infer_frames: int  # output frames of one generated video
    infer_repeats: int  # timed pipeline calls wanted per setting
    infer_steps: int | None  # denoising steps; None: each preset's own
    numerics_draws: int  # random input draws compared across precisions
    budget_s: float  # whole run, wall clock
    # First guesses of one item's least cost (setup + warm-up + one repeat), replaced by what the first item of
    # each kind took; they decide whether an item still fits and how many extra repeats the others can have.
    priors: dict[str, float] = field(default_factory=dict)


FULL = Sizes(preset="sd15", device="cuda", train_frames=12, train_warmup=2, train_steps=10, infer_frames=24,
             infer_repeats=2, infer_steps=None, numerics_draws=2, budget_s=450,
             priors={"numerics": 30, "training": 35, "inference": 20})
DRY = Sizes(preset="tiny", device="cpu", train_frames=2, train_warmup=1, train_steps=1, infer_frames=8,
            infer_repeats=1, infer_steps=1, numerics_draws=1, budget_s=300,
            priors={"numerics": 3, "training": 4, "inference": 2})


# ------------------------------------------------------------------------------------------------ budget
class Budget:
    """One wall-clock budget for the whole run, shared by every measurement ("item").

    Every item is announced up front (``expect``). An item starts only if its least cost (setup, warm-up and
    one timed repeat; the first item of a kind measures it) still fits; extra repeats spend only what the items
    still to come do not need for their own least cost. So a short budget first cuts repeats, then items.
    """

    def __init__(self, seconds: float, priors: dict[str, float], clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = float(seconds), clock
        self.start = clock()
        self.cost = dict(priors)
        self.pending: dict[str, int] = {}

    def expect(self, kind: str, count: int) -> None:
        self.pending[kind] = self.pending.get(kind, 0) + count

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def reserve(self) -> float:
        """Least time the announced items not yet started need."""
        return sum(n * self.cost.get(kind, 0.0) for kind, n in self.pending.items())

    def begin(self, kind: str) -> bool:
        """Take one ``kind`` item off the pending list; True if its least cost fits in what is left."""
        self.pending[kind] = max(0, self.pending.get(kind, 0) - 1)
        return self.left() >= self.cost.get(kind, 0.0)

    def skip(self, kind: str, count: int = 1) -> None:
        """Items that will not run (their section failed): stop reserving time for them."""
        self.pending[kind] = max(0, self.pending.get(kind, 0) - count)

    def repeats(self, per_repeat: float, done: int, wanted: int) -> int:
        """How many more timed repeats (after ``done``) fit, at most ``wanted - done``."""
        if done >= wanted:
            return 0
        spare = self.left() - self.reserve()
        if per_repeat <= 0:
            return wanted - done
        return max(0, min(wanted - done, math.floor(spare / per_repeat)))

    def measured(self, kind: str, least_cost: float) -> None:
        """What one item of ``kind`` took at least (setup + warm-up + one repeat): the estimate for the rest."""
        self.cost[kind] = least_cost


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# ------------------------------------------------------------------------------------------------ environment
def _command(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def environment(device: str) -> list[tuple[str, str]]:
    """What the figures were measured on: GPU, driver, CUDA, library versions, commit."""
    import torch

    rows: list[tuple[str, str]] = []
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        smi = _command("nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader")
        driver, power, clock = ([s.strip() for s in smi.splitlines()[0].split(",")] + ["", "", ""])[:3] if smi \
            else ("unknown (nvidia-smi failed)", "", "")
        rows += [("GPU", f"{props.name} ({props.total_memory / GIB:.1f} GiB, {props.multi_processor_count} SMs, "
                         f"compute capability {props.major}.{props.minor})"),
                 ("driver", driver + (f"; power limit {power}, max SM clock {clock}" if power else "")),
                 ("CUDA (torch build)", str(torch.version.cuda)),
                 ("cuDNN", str(torch.backends.cudnn.version()))]
        if torch.cuda.device_count() > 1:
            rows.append(("GPUs visible", f"{torch.cuda.device_count()} (the check uses cuda:0)"))
    elif device == "cuda":
        rows.append(("device", f"none: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA "
                               "device"))
    else:
        rows.append(("device", f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                               f"{torch.get_num_threads()} torch threads): a rehearsal, not a measurement"))
    rows += [("torch", torch.__version__), ("deepspeed", _version("deepspeed")), ("diffusers", _version("diffusers")),
             ("transformers", _version("transformers")), ("python", platform.python_version()),
             ("commit", _command("git", "-C", str(REPO), "rev-parse", "--short", "HEAD") or "unknown"),
             ("date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime()))]
    return rows


# ------------------------------------------------------------------------------------------------ report
@dataclass
class Section:
    title: str
    columns: list[str]
    intro: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Report:
    """The markdown report (``gpu-check.md``), its raw numbers (``gpu-check.json``) and a log of tracebacks
    (``gpu-check.log``), rewritten after every item so a run that dies still leaves what it measured."""

    def __init__(self, out: Path, title: str) -> None:
        self.out, self.title = Path(out), title
        self.out.mkdir(parents=True, exist_ok=True)
        self.env: list[tuple[str, str]] = []
        self.sections: dict[str, Section] = {}
        self.footer: list[str] = []
        self.footer_notes: list[str] = []  # run-level notes (an interruption), put before the footer
        self.log_path = self.out / "gpu-check.log"
        self.log_path.write_text("")

    def section(self, key: str, title: str, columns: list[str], intro: str = "") -> Section:
        self.sections[key] = Section(title, columns, intro)
        return self.sections[key]

    def log(self, text: str) -> None:
        with self.log_path.open("a") as f:
            f.write(text.rstrip() + "\n")

    def failure(self, where: str) -> str:
        """Log the exception being handled; return its one-line summary for the report."""
        kind, exc, _ = sys.exc_info()
        self.log(f"--- {where}\n{traceback.format_exc()}")
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"{kind.__name__}: {first}" if kind else "unknown error"

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in self.env), ""]
        for s in self.sections.values():
            lines += [f"## {s.title}", ""]
            if s.intro:
                lines += [s.intro, ""]
            if s.rows:
                lines += ["| " + " | ".join(s.columns) + " |", "|" + "---|" * len(s.columns)]
                lines += ["| " + " | ".join(str(r.get(c, "")) for c in s.columns) + " |" for r in s.rows]
                lines.append("")
            lines += [f"- {n}" for n in s.notes]
            if s.notes:
                lines.append("")
        lines += self.footer
        return "\n".join(lines).rstrip() + "\n"

    def save(self) -> Path:
        path = self.out / "gpu-check.md"
        path.write_text(self.markdown())
        raw = {"title": self.title, "environment": dict(self.env),
               "sections": {k: {"title": s.title, "rows": s.rows, "notes": s.notes} for k, s in self.sections.items()}}
        (self.out / "gpu-check.json").write_text(json.dumps(raw, indent=1, default=str))
        return path
