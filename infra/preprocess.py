"""Preprocess raw talking-head videos into WebDataset shards (docs/preprocessing.md, docs/shard-format.md).

    python infra/preprocess.py --input <dir|glob|list file|URL> --output <dir> [preprocess.key=value ...]
    ray submit infra/ray/aws-cluster.yaml infra/preprocess.py -- --address auto --input s3://... --output ...

Without ``--address`` an embedded single-node Ray (``preprocess.num_workers`` CPUs, loopback only) runs the job
and is shut down at the end. Rerunning the same command resumes where it stopped. One job at a time per output
folder; a rerun with other output-affecting settings refuses (or reprocesses, ``on_config_change=reprocess``).
Config and input errors are printed as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from infra.cli import Parser

    p = Parser("infra/preprocess.py", description=__doc__.split("\n\n")[0], sections=("preprocess",))
    p.add_argument("--input", required=True, help="folder, glob, list file (one path/URL a line) or fsspec URL")
    p.add_argument("--output", required=True, help="output folder (shards/, index.json, rejected.jsonl, work/)")
    p.add_argument("--config", default=None, help="a config preset or YAML whose 'preprocess:' section is used")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' under ray submit)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. preprocess.num_workers=2")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from infra.cli import run_cli
    from preprocessing.output_dir import OutputInUse

    args = parse_args(argv)
    return run_cli("preprocess", lambda: _run(args), user_errors=(OutputInUse,))


def _prefixed(overrides: list[str]) -> list[str]:
    """Full keys (``preprocess.num_workers=2``); a bare key of the preprocess section (``num_workers=2``) is
    still read as one, with a warning, for command lines written before every command took full keys."""
    from omegaconf import OmegaConf

    from infra.config import valid_keys
    from infra.config_tree import VExpressConfig

    keys, _ = valid_keys(OmegaConf.structured(VExpressConfig))
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" in o and key not in keys and f"preprocess.{key}" in keys:
            print(f"preprocess: warning: {key}=...: write preprocess.{key}= (bare keys are deprecated)",
                  file=sys.stderr, flush=True)
            o = f"preprocess.{o}"
        out.append(o)
    return out


def _run(args: argparse.Namespace) -> int:
    from infra.config_tree import load
    from preprocessing.pipeline import InfraFailure, run

    overrides = _prefixed(args.overrides)
    cfg = load(args.config, overrides).preprocess
    try:
        run(args.input, args.output, cfg, address=args.address)
    except InfraFailure as exc:  # not the input's fault: rerunning resumes
        print(f"[preprocess] error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
