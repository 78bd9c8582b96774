"""The GPU check (benchmarks/gpu_check.py): its CPU rehearsal runs every setting, and its budget, failure and
preset handling behave as documented (without running a model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_report import DRY, Budget, Report
from benchmarks.gpu_sections import TRAIN_SETTINGS, inference_presets, inference_settings, new_context, run_item
from model.inference_config import PRESETS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_measures_every_setting(tmp_path):
    # A generous budget: this checks the code paths, not how fast a shared CI machine is.
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path),
                           "--budget-s", "800"], cwd=REPO, capture_output=True, text=True, timeout=850,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "gpu-check.md").read_text()
    assert report in proc.stdout  # printed as written
    assert (tmp_path / "gpu-check.log").read_text() == ""  # no traceback anywhere
    sections = json.loads((tmp_path / "gpu-check.json").read_text())["sections"]

    numerics = {r["precision"]: r for r in sections["numerics"]["rows"]}
    assert list(numerics) == ["fp32 again", "tf32", "bf16", "fp16"]
    assert all(r["finite"] == "yes" for r in numerics.values())
    assert float(numerics["fp32 again"]["rel. L2 error (worst draw)"]) < 1e-6
    assert 1e-5 < float(numerics["bf16"]["rel. L2 error (worst draw)"]) < 0.1  # really ran in bf16

    train = sections["training"]["rows"]
    assert [(r["stage"], r["grad ckpt"]) for r in train] == [
        (s, c) for s in ("I", "II", "III") for c in ("on", "off")]
    assert len(train) == len(TRAIN_SETTINGS)
    for r in train:
        assert r["note"] == "" and float(r["step s (median)"]) > 0 and r["steps"] >= 1
        assert r["frames × batch"] == ("1 × 1" if r["stage"] == "I" else f"{DRY.train_frames} × 1")

    infer = sections["inference"]["rows"]
    assert [(r["dtype"], r["offload"], r["preset"]) for r in infer] == [
        (d, o, p) for d in ("fp16", "bf16") for o in ("no", "yes") for p in PRESETS]
    for r in infer:
        assert r["note"] == "" and r["frames"] == DRY.infer_frames and float(r["s / frame"]) > 0


def _context(tmp_path, seconds: float):
    report = Report(tmp_path, "test")
    sec = report.section("s", "Section", ["name", "value", "note"])
    ctx = new_context(DRY, Budget(seconds, {"k": 1.0}), report, tmp_path)
    ctx.budget.start = ctx.budget.clock()  # count from here: building the context is not an item
    return ctx, sec


def test_run_item_records_oom_failure_and_skip(tmp_path):
    ctx, sec = _context(tmp_path, 600)  # generous: a loaded machine must not skip the first items
    ctx.budget.expect("k", 4)

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken():
        raise ValueError("no such thing\nsecond line")

    assert run_item(ctx, sec, "k", {"name": "ok"}, lambda: {"value": 1})
    assert not run_item(ctx, sec, "k", {"name": "oom"}, oom)
    assert not run_item(ctx, sec, "k", {"name": "broken"}, broken)
    ctx.budget.seconds = 0  # spent
    assert not run_item(ctx, sec, "k", {"name": "late"}, lambda: {"value": 2})
    notes = {r["name"]: r.get("note", "") for r in sec.rows}
    assert notes["ok"] == "" and notes["oom"].startswith("OOM")
    assert notes["broken"] == "failed: ValueError: no such thing"
    assert notes["late"].startswith("skipped: budget spent")
    assert "Traceback" in (tmp_path / "gpu-check.log").read_text()  # the whole story is in the log
    saved = (tmp_path / "gpu-check.md").read_text()  # saved after every item
    assert "| late |  | skipped: budget spent" in saved


def test_budget_cuts_repeats_before_items():
    now = [0.0]
    budget = Budget(100, {"train": 20.0}, clock=lambda: now[0])
    budget.expect("train", 4)
    assert budget.begin("train")  # 3 still to come need 3 x 20 s
    now[0] = 10.0
    assert budget.repeats(per_repeat=5.0, done=1, wanted=10) == 6  # (90 - 60) s spare / 5 s
    assert budget.repeats(per_repeat=50.0, done=1, wanted=10) == 0  # no spare: one repeat only, items keep theirs
    now[0] = 30.0
    for _ in range(3):
        assert budget.begin("train")
        now[0] += 20.0
    assert budget.left() == 10.0 and not budget.begin("train")  # an item that would not fit is skipped


def test_inference_presets_follow_the_registry():
    from model.inference_config import PRESETS, InferenceConfig

    base = InferenceConfig(audio_attention_weight=2.0)
    presets = inference_presets(base)
    assert list(presets) == list(PRESETS)
    for name, preset in presets.items():
        assert preset.preset == name and preset.audio_attention_weight == 2.0
        assert all(getattr(preset, k) == v for k, v in PRESETS[name].items())
    assert len(inference_settings(presets)) == 2 * 2 * 3  # dtype x offload x preset
