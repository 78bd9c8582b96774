"""``vexpress``: one command for the pipeline, one flag style (``--config`` + dot-list ``section.key=value``).

The subcommands are the project's entry points under one name; the thin entry points stay what they are:
``ray submit infra/<cluster>.yaml infra/preprocess.py`` on a Ray cluster, ``deepspeed training/run.py`` under any
DeepSpeed launcher, ``python -m model.generate``, ``python -m evaluation.run``, ``python -m model.checkpoints``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from infra.cli import _PROG, EXIT_USER_ERROR, Parser, run_cli

REPO = Path(__file__).resolve().parent.parent
TRAIN_SECTIONS = ("train", "data", "model", "tracking")


def _preprocess(argv: list[str]) -> int:
    from infra.preprocess import main

    return main(argv)


def _generate(argv: list[str]) -> int:
    from model.generate import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from evaluation.run import main

    return main(argv)


def _verify(argv: list[str]) -> int:
    from model.checkpoints import verify_main

    return verify_main(argv)


# ------------------------------------------------------------------------------------------ train
def train_parser() -> Parser:
    p = Parser("vexpress train", description=(
        "Train one stage. One process (a world of one) unless --ranks > 1 or --hostfile is given; then the\n"
        "deepspeed launcher starts training/run.py on every rank (the same as running it yourself)."),
        sections=TRAIN_SECTIONS)
    p.add_argument("--config", required=True, help="stage preset (sd15/stage1) or YAML path")
    p.add_argument("--resume", default=None, help="'auto' (the latest checkpoint of train.output_dir) or a step folder")
    p.add_argument("--ranks", type=int, default=0,
                   help="ranks on this machine; 0: one per visible GPU, one process on a machine without GPUs")
    p.add_argument("--hostfile", default=None, help="DeepSpeed hostfile (multi-node; infra/deepspeed/hostfile.example)")
    p.add_argument("--master-port", type=int, default=0, help="rendezvous port (0: a free one)")
    p.add_argument("--dry-run", action="store_true", help="print the command that would run, and exit")
    p.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. data.shards=/data/shards train.lr=1e-5")
    return p


def _ranks(requested: int) -> int:
    if requested > 0:
        return requested
    import torch

    return max(torch.cuda.device_count(), 1)


def _train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)

    def run() -> int:
        from infra.config_tree import load

        load(args.config, args.overrides)  # a bad value or key fails here, in one line, before any launcher
        stage_args = ["--config", args.config, *(["--resume", args.resume] if args.resume else []), *args.overrides]
        ranks = _ranks(args.ranks)
        if ranks == 1 and not args.hostfile:
            if args.dry_run:
                print(" ".join([sys.executable, "training/run.py", *stage_args]))
                return 0
            from training.run import main

            return main(stage_args)
        from infra.net import free_port

        launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        where = ["--hostfile", args.hostfile] if args.hostfile else ["--num_gpus", str(ranks), "--master_addr",
                                                                     "127.0.0.1"]
        command = [launcher, *where, "--master_port", str(args.master_port or free_port()),
                   str(REPO / "training" / "run.py"), *stage_args]
        print(" ".join(command), flush=True)
        if args.dry_run:
            return 0
        return subprocess.run(command, env={"OMP_NUM_THREADS": "1", **os.environ}).returncode

    return run_cli("vexpress train", run)


# ------------------------------------------------------------------------------------------ print-config
def print_config_parser() -> Parser:
    from infra.config_tree import section_sources

    p = Parser("vexpress print-config", description=(
        "Print the effective config as YAML: dataclass defaults <- --config (or the config saved beside\n"
        "--checkpoint) <- overrides. Without --config and --checkpoint: every key with its default."),
        sections=tuple(section_sources()))
    p.add_argument("--config", default=None, help="preset name or YAML path")
    p.add_argument("--checkpoint", default=None, help="stage output, step, export or five-file folder: its saved config")
    p.add_argument("--section", action="append", default=[], help="print only this section (repeatable)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. train.lr=1e-5")
    return p


def _print_config(argv: list[str]) -> int:
    args = print_config_parser().parse_args(argv)

    def run() -> int:
        from omegaconf import OmegaConf

        from infra.config_tree import load, load_for_checkpoint, section_sources

        if args.config or args.checkpoint:
            cfg, source = load_for_checkpoint(args.config, args.checkpoint, args.overrides)
        else:
            cfg, source = load(None, args.overrides), "dataclass defaults"
        sources = section_sources()
        unknown = [s for s in args.section if s not in sources]
        if unknown:
            raise ValueError(f"--section {unknown[0]}: no such section; choose from {', '.join(sources)}")
        tree = OmegaConf.structured(cfg)
        print(f"# config: {source}")
        for name in args.section or list(sources):
            print(f"# {name}: {sources[name]}")
            print(OmegaConf.to_yaml(OmegaConf.create({name: tree[name]})), end="")
        return 0

    return run_cli("vexpress print-config", run)


# ------------------------------------------------------------------------------------------ dispatch
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "preprocess": (_preprocess, "raw videos -> WebDataset shards on Ray (infra/preprocess.py)"),
    "train": (_train, "one training stage with DeepSpeed (training/run.py)"),
    "generate": (_generate, "reference image + audio [+ V-Kps | driving video] -> mp4 (model/generate.py)"),
    "evaluate": (_evaluate, "FID, FVD, ΔFaceSim, KpsDis, SyncNet on test sets -> MLflow (evaluation/run.py)"),
    "verify": (_verify, "check checkpoint files against the model's keys and shapes (model/checkpoints.py)"),
    "print-config": (_print_config, "the effective config as YAML, with where each section's dataclass lives"),
}


def top_help() -> str:
    from infra.config_tree import section_sources

    lines = ["usage: vexpress <command> [--config PRESET|YAML] [section.key=value ...] [--help]", "",
             "V-Express talking-head pipeline: preprocess -> train (stages I, II, III) -> generate / evaluate.", "",
             "commands:"]
    lines += [f"  {name:<13} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Each command's --help shows its options with their defaults and the config sections it reads.",
              "Config: dataclass defaults <- --config YAML (configs/tiny, configs/cpu, configs/sd15, "
              "configs/sd15-official)", "<- dot-list overrides. The sections and their dataclasses:"]
    lines += [f"  {name:<11} {where}" for name, where in section_sources().items()]
    lines += ["", "--checkpoint (generate, evaluate, verify, print-config) takes a stage output folder (its latest "
              "export),", "a step folder, an export folder or an official five-file folder; the config saved "
              "beside it is used", "unless --config is given.", "",
              "examples:",
              "  vexpress preprocess --config sd15/stage1 --input /data/hdtf --output /data/shards/hdtf",
              "  vexpress train --config sd15/stage1 data.shards=/data/shards/hdtf --resume auto",
              "  vexpress generate --checkpoint runs/sd15/stage3 --reference ref.jpg --audio speech.wav "
              "--output out.mp4",
              "  vexpress evaluate --checkpoint runs/sd15/stage3 --test-set hdtf=/data/shards/hdtf_test",
              "  vexpress print-config --config sd15/stage2 --section train"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help())
        return 0 if argv else EXIT_USER_ERROR
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(command, list(COMMANDS), n=1, cutoff=0.0)
        print(f"vexpress: error: unknown command {command!r}; did you mean {near[0]}? (vexpress --help)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    _PROG.append(f"vexpress {command}")
    try:
        return COMMANDS[command][0](rest)
    finally:
        _PROG.pop()


if __name__ == "__main__":
    sys.exit(main())
