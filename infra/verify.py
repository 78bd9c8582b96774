"""``python -m infra.verify`` (also ``vexpress verify``): do checkpoint files, or a key/shape manifest, match the
model's keys and shapes? Built on the meta device, so the sd15 check needs no memory for weights.

    python -m infra.verify --checkpoint runs/sd15/stage3         # a stage output, step, export or five-file folder
    python -m infra.verify --manifest model/data/vexpress_official_state_dicts.json    # the official release

Exit status 0 when all five files match. The checks themselves live in ``model/checkpoints.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from torch import nn

from infra.cli import Parser, run_cli
from infra.config_tree import load
from model.build import build_modules
from model.checkpoint_paths import resolve_checkpoint
from model.checkpoints import (
    FILE_STEMS,
    FileReport,
    check_folder,
    expected_shapes,
    load_checkpoint_config,
    verify_manifest,
)


def _model_config(preset: str | None, folder: Path | None):
    """``--preset`` name (configs/<preset>/stage1.yaml) or YAML path; else the folder's config.yaml; else sd15."""
    if preset is None and folder is not None:
        saved = load_checkpoint_config(folder)
        if saved is not None:
            return saved
    preset = preset or "sd15"
    return load(preset if preset.endswith(".yaml") else f"{preset}/stage1").model


def _meta_modules(cfg) -> nn.Module:
    return build_modules(cfg, device="meta")


def _print_reports(reports: dict[str, FileReport]) -> int:
    for report in reports.values():
        print(report.describe())
    matching = sum(r.ok for r in reports.values())
    print(f"files matching: {matching}/{len(FILE_STEMS)}")
    return matching


def add_verify_arguments(verify: argparse.ArgumentParser) -> None:
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", "--folder", dest="folder", type=Path, metavar="CHECKPOINT",
                        help="stage output, step, export or five-file folder (model.checkpoint_paths)")
    source.add_argument("--manifest", type=Path, help="JSON key/shape manifest (no weights needed)")
    verify.add_argument("--config", "--preset", dest="preset", default=None, metavar="CONFIG",
                        help="model preset (configs/<preset>/stage1.yaml) or a config YAML; default: the config "
                             "saved beside the weights if present, else sd15")


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.verify`` / ``vexpress verify``."""
    parser = Parser("python -m infra.verify", description="compare checkpoint files (or a manifest) with the "
                    "model's keys and shapes", sections=("model",))
    add_verify_arguments(parser)
    return _run_verify(parser.parse_args(argv))


def _run_verify(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return run_cli("checkpoints verify", lambda: _verify(args))


def _verify(args: argparse.Namespace) -> int:
    if args.folder is not None:
        try:
            args.folder = resolve_checkpoint(args.folder).weights
        except FileNotFoundError:
            if not args.folder.is_dir():
                raise
            # a folder that holds only some of the files: the per-file report below says which are missing
    cfg = _model_config(args.preset, args.folder)
    print(f"model preset: {cfg.preset} (built on the meta device)")
    modules = _meta_modules(cfg)
    if args.folder is not None:
        reports = check_folder(args.folder, expected_shapes(modules))
    else:
        reports = verify_manifest(args.manifest, modules)
    return 0 if _print_reports(reports) == len(FILE_STEMS) else 1


if __name__ == "__main__":
    sys.exit(main())
