"""Train one stage: ``deepspeed training/run.py --config configs/tiny/stage1.yaml [key=value ...] [--resume auto]``.

Also runs as a plain single process (``python training/run.py ...``) for debugging: a world of one.
Config and input errors (a missing ``data.shards``, a file as ``train.output_dir``, an unusable checkpoint) are
printed as one line, exit status 2, before DeepSpeed starts where they can be checked up front.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script by the launcher


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from infra.cli import Parser

    parser = Parser("training/run.py", description=__doc__, sections=("train", "data", "model", "tracking"))
    parser.add_argument("--config", required=True, help="YAML file or preset name (tiny/stage1)")
    parser.add_argument("--resume", default=None, help="'auto' (latest checkpoint of output_dir) or a step folder")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the launcher
    parser.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. train.lr=1e-4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from infra.cli import run_cli

    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_cli("training", lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from infra.config_tree import load
    from training.trainer import Trainer

    cfg = load(args.config, args.overrides)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")
    history = Trainer(cfg, resume=args.resume).run()
    if rank == 0 and history:
        logging.getLogger("training.run").info("done: %d steps this run, last loss %.5f", len(history),
                                               history[-1].loss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
