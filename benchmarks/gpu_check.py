"""The GPU check: real-size training and inference figures from one run on whatever GPU is at hand.

    bash scripts/gpu_check.sh [OUT_DIR]                # a bare GPU machine: set up from the lock, then run this
    python benchmarks/gpu_check.py [--out DIR] [--budget-s 450] [--only numerics,training,inference]
    python benchmarks/gpu_check.py --dry-run           # the CPU rehearsal: tiny sizes, every code path

On one GPU, with the ``sd15`` modules and random weights (nothing is downloaded):

- numerics: one forward of the conditioning modules + denoising UNet with the weights in TF32, bf16 and fp16,
  against fp32 on the same inputs (relative L2 error, max error, finite);
- training: the one-rank DeepSpeed step of ``training/`` (bf16) for stage I (1 frame, the preset's batch),
  II and III (12 frames), gradient checkpointing on and off: median step time after warm-up, samples/s,
  frames/s, peak GPU memory; out of memory is recorded, not fatal;
- inference: the whole ``VExpressPipeline`` at 512² for every preset ``model.inference_config`` exposes
  (``PRESETS``; else the default config), fp16 and bf16, with and without module offload: seconds per output
  frame (sampling and decoding apart), peak memory.

One wall-clock budget covers the run (default 450 s, sized for an H100-class GPU): an item that no longer fits is
skipped with a note, and repeats are cut before items are. The report (``gpu-check.md``, printed at the end),
its raw numbers (``gpu-check.json``) and a log of tracebacks (``gpu-check.log``) go to ``--out``, else ``$OUT``,
else ``runs/gpu-check``; the report is rewritten after every item, so a run that dies still leaves one.
Where its figures go: docs/capacity-plan.md and docs/inference.md ("Measured on a GPU").

Exit status: 0 when every item was measured, skipped or out of memory; 1 when one failed (see the log);
2 without a GPU (outside --dry-run); 130 when interrupted (SIGINT), after writing and printing the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.gpu_report import DRY, FULL, Budget, Report, environment  # noqa: E402

ANCHORS = [
    "Anchors to compare with: TalkVid's retrain of V-Express logs ≈ 1.25 s per stage-II step (512², 20 frames, "
    "batch 1, fp16, 8-bit Adam); the official release needs ≈ 84 s of V100 time per second of generated video "
    "(25 steps, CFG, 24/4 windows); Moore-AnimateAnyone users report out-of-memory at stage I on 24 GB cards.",
]
WHERE = [
    "Where these figures go (each table marked with the GPU, driver, torch/CUDA and commit above): the training "
    "rows → docs/capacity-plan.md, *Measured on a GPU* (step time → GPU-seconds per sample, replacing the FLOP "
    "estimate at 25 % utilisation; peak memory next to the DeepSpeed estimates); the inference and numerics rows "
    "→ docs/inference.md, *Measured on a GPU*.",
]


def parse_args(argv=None) -> argparse.Namespace:
    from benchmarks.gpu_sections import SECTIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="report folder (default: $OUT, else runs/gpu-check)")
    ap.add_argument("--dry-run", action="store_true", help="CPU rehearsal: tiny preset, every code path, seconds")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"wall-clock budget for the whole run (default {FULL.budget_s:g} s; dry run {DRY.budget_s:g})")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    ap.add_argument("--verbose", action="store_true", help="keep DeepSpeed's info logging")
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    return args


def planned_items(sizes, only: list[str]) -> dict[str, int]:
    """How many items each section will run (announced to the budget before anything runs)."""
    from benchmarks.gpu_sections import TRAIN_SETTINGS, inference_presets, inference_settings
    from infra.config_tree import load

    counts = {"numerics": 1, "training": len(TRAIN_SETTINGS),
              "inference": len(inference_settings(inference_presets(load(f"{sizes.preset}/stage3").inference)))}
    return {k: counts[k] for k in only}


def run(args) -> int:
    import torch

    from benchmarks.gpu_sections import SECTIONS, new_context, scratch_dir

    sizes = DRY if args.dry_run else FULL
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    out = Path(args.out or os.environ.get("OUT") or REPO / "runs" / "gpu-check")
    if args.dry_run:
        torch.set_num_threads(1)  # one thread: on a small shared CPU, more threads mostly wait on each other
    if not args.verbose:
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    gpu = sizes.device == "cuda" and torch.cuda.is_available()
    title = (f"GPU check: {torch.cuda.get_device_name(0)}" if gpu else
             "GPU check: CPU rehearsal (--dry-run), tiny sizes" if args.dry_run else "GPU check: no GPU found")
    report = Report(out, title)
    budget = Budget(sizes.budget_s, sizes.priors)
    report.env = environment(sizes.device)
    if sizes.device == "cuda" and not gpu:
        report.footer = ["No CUDA device is visible to torch: nothing was measured. Check the driver "
                         "(`nvidia-smi`) and that torch is a CUDA build; `--dry-run` rehearses on the CPU."]
        report.save()
        print(report.markdown())
        return 2
    failed = interrupted = False
    with scratch_dir() as tmp:
        ctx = new_context(sizes, budget, report, tmp)
        try:
            planned = planned_items(sizes, args.only)
        except Exception:  # noqa: BLE001 - e.g. a malformed preset registry: its section reports it below
            planned = dict.fromkeys(args.only, 1)
        for key, count in planned.items():
            budget.expect(key, count)
        for key in args.only:
            try:
                SECTIONS[key](ctx)
            except KeyboardInterrupt:  # Ctrl-C or an outer time limit (timeout -s INT): keep what was measured
                interrupted = True
                report.footer_notes.append(f"Interrupted after {budget.elapsed():.0f} s, in section {key}.")
                break
            except Exception:  # noqa: BLE001 - a section that cannot start still leaves a report
                failed = True
                summary = report.failure(f"section {key}")
                sec = report.sections.get(key) or report.section(key, key.capitalize(), [])
                sec.notes.append(f"section failed before finishing its settings: {summary} (see gpu-check.log)")
            finally:
                budget.skip(key, budget.pending.get(key, 0))
                report.save()
    failed = failed or any(str(r.get("note", "")).startswith("failed") for s in report.sections.values()
                           for r in s.rows)
    report.env.append(("wall time", f"{budget.elapsed():.0f} s of a {budget.seconds:.0f} s budget"))
    report.footer = [*report.footer_notes, "", *ANCHORS, "", *WHERE]
    path = report.save()
    print(report.markdown())
    print(f"report: {path}", file=sys.stderr)
    return 130 if interrupted else 1 if failed else 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
