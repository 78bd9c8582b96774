"""V-Express weights in the official five-file layout: load, save, verify.

Files (one folder): ``denoising_unet``, ``reference_net``, ``motion_module``, ``v_kps_guider``,
``audio_projection``, each ``.safetensors`` (ours), ``.bin`` or ``.pth`` (official), fp16 or fp32.
``denoising_unet`` holds the full 3-D UNet state dict, with or without the motion keys (the manifest's
``variants``); ``motion_module`` holds the keys containing ``motion_module`` and is applied after it.

Pickled files are read with ``torch.load(weights_only=True)`` only. Every file is checked (keys,
shapes) before any weight is copied, so a strict load that fails leaves the modules untouched.

CLI::

    python -m model.checkpoints verify --checkpoint runs/sd15/stage3        # or vexpress verify --checkpoint ...
    python -m model.checkpoints verify --manifest vexpress_official_state_dicts.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model.checkpoint_paths import CONFIG_NAME

log = logging.getLogger(__name__)

# File stem -> attribute of VExpressModules whose state dict it holds (in official loading order).
FILE_MODULES: dict[str, str] = {
    "denoising_unet": "denoising_unet",
    "reference_net": "reference_net",
    "motion_module": "denoising_unet",
    "v_kps_guider": "v_kps_guider",
    "audio_projection": "audio_projection",
}
FILE_STEMS: tuple[str, ...] = tuple(FILE_MODULES)
EXTENSIONS: tuple[str, ...] = (".safetensors", ".bin", ".pth", ".pt")
MOTION_KEY = "motion_module"  # official save_motion_module_checkpoint filter

Shape = tuple[int, ...]


class CheckpointMismatchError(ValueError):
    """Keys or shapes of checkpoint files do not match the modules (message lists them per file)."""


# ------------------------------------------------------------------------------------------ reports
@dataclass
class FileReport:
    """How one checkpoint file compares with what the modules expect."""

    stem: str
    path: Path | None = None
    num_tensors: int = 0
    num_params: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # the module has it, the file does not
    unexpected: list[str] = field(default_factory=list)  # the file has it, the module does not
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # key, file shape, module shape
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.path is not None and not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        where = self.path.name if self.path is not None else f"{self.stem}.* (not found)"
        dtypes = ", ".join(f"{k}×{v}" for k, v in sorted(self.dtypes.items())) or "-"
        lines = [f"{self.stem:<17} {where}: {self.num_tensors} tensors, {self.num_params:,} values, dtype {dtypes}"
                 f" -> {'OK' if self.ok else 'MISMATCH'}"]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
                lines.append(f"    {len(items)} {label}: {shown}")
        if self.mismatched:
            shown = ", ".join(f"{k}: file {list(f)} vs model {list(m)}" for k, f, m in self.mismatched[:limit])
            more = f", ... (+{len(self.mismatched) - limit} more)" if len(self.mismatched) > limit else ""
            lines.append(f"    {len(self.mismatched)} mis-shaped: {shown}{more}")
        lines.extend(f"    note: {n}" for n in self.notes)
        return "\n".join(lines)


def compare_shapes(stem: str, expected: Mapping[str, Shape], found: Mapping[str, Shape],
                   path: Path | None = None, dtypes: Mapping[str, int] | None = None) -> FileReport:
    """Missing / unexpected / mis-shaped keys of ``found`` (a file) against ``expected`` (the module)."""
    report = FileReport(stem, path, num_tensors=len(found), dtypes=dict(dtypes or {}))
    report.num_params = sum(_numel(s) for s in found.values())
    report.missing = [k for k in expected if k not in found]
    report.unexpected = [k for k in found if k not in expected]
    report.mismatched = [(k, tuple(s), tuple(expected[k])) for k, s in found.items()
                         if k in expected and tuple(s) != tuple(expected[k])]
    return report


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ------------------------------------------------------------------------------------------ expected keys
def file_state_dicts(modules: nn.Module, with_motion_in_denoising: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """The five official files' state dicts taken from ``modules`` (a VExpressModules)."""
    unet = modules.denoising_unet.state_dict()
    out = {
        "denoising_unet": unet if with_motion_in_denoising else {k: v for k, v in unet.items() if MOTION_KEY not in k},
        "reference_net": modules.reference_net.state_dict(),
        "motion_module": {k: v for k, v in unet.items() if MOTION_KEY in k},
        "v_kps_guider": modules.v_kps_guider.state_dict(),
        "audio_projection": modules.audio_projection.state_dict(),
    }
    return out


def expected_shapes(modules: nn.Module) -> dict[str, dict[str, Shape]]:
    """Key -> shape per file (works on meta-device modules)."""
    return {stem: {k: tuple(v.shape) for k, v in sd.items()} for stem, sd in file_state_dicts(modules).items()}


# ------------------------------------------------------------------------------------------ reading files
def find_checkpoint_file(folder: str | Path, stem: str) -> Path | None:
    """``<folder>/<stem>.safetensors|.bin|.pth|.pt`` (first found in that order)."""
    folder = Path(folder)
    candidates = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
    if len(candidates) > 1:
        log.warning("%s: several files for %s (%s); using %s", folder, stem, [c.name for c in candidates],
                    candidates[0].name)
    return candidates[0] if candidates else None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatchError(f"{path}: {len(bad)} entries are not tensors (first: {bad[0]!r})")
    return dict(obj)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors on the CPU. Pickles via ``weights_only=True`` (memory-mapped when possible)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) torch.save files cannot be memory-mapped
            raise CheckpointMismatchError(f"{path}: cannot read as a torch checkpoint ({exc})") from exc
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for files holding arbitrary objects, zip errors for junk
        raise CheckpointMismatchError(f"{path}: cannot read as a weights-only torch checkpoint ({exc})") from exc
    return _unwrap(obj, path)


def read_shapes(path: str | Path) -> tuple[dict[str, Shape], Counter]:
    """Key -> shape and a dtype histogram of a checkpoint file, without reading the values where possible."""
    path = Path(path)
    if path.suffix == ".safetensors":
        shapes: dict[str, Shape] = {}
        dtypes: Counter = Counter()
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                tensor_slice = f.get_slice(key)
                shapes[key] = tuple(tensor_slice.get_shape())
                dtypes[_SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), tensor_slice.get_dtype())] += 1
        return shapes, dtypes
    state = read_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, Counter(_dtype_name(v.dtype) for v in state.values())


_SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64", "I64": "int64"}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------ checking a folder
def check_folder(folder: str | Path, expected: Mapping[str, Mapping[str, Shape]]) -> dict[str, FileReport]:
    """Per file: compare keys/shapes in ``folder`` with ``expected`` (see :func:`expected_shapes`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: checkpoint folder not found")
    reports: dict[str, FileReport] = {}
    for stem in FILE_STEMS:
        path = find_checkpoint_file(folder, stem)
        if path is None:
            reports[stem] = FileReport(stem, None, missing=list(expected[stem]),
                                       notes=[f"no {stem}{{{','.join(EXTENSIONS)}}} in {folder}"])
            continue
        shapes, dtypes = read_shapes(path)
        reports[stem] = compare_shapes(stem, expected[stem], shapes, path, dtypes)
    _allow_denoising_without_motion(reports)
    return reports


def _allow_denoising_without_motion(reports: dict[str, FileReport]) -> None:
    """A denoising file lacking exactly all motion keys is the official variant when motion_module is present."""
    unet, motion = reports["denoising_unet"], reports["motion_module"]
    if unet.path is None or not unet.missing or not all(MOTION_KEY in k for k in unet.missing):
        return
    if motion.ok:
        unet.notes.append(f"without the {len(unet.missing)} motion keys (variant); they come from "
                          f"{motion.path.name}")
        unet.missing = []
    else:
        unet.notes.append("lacks the motion keys and motion_module is missing or mismatched")


# ------------------------------------------------------------------------------------------ load / save
def load_vexpress_weights(modules: nn.Module, folder: str | Path, strict: bool = True) -> dict[str, FileReport]:
    """Load the five files in ``folder`` into ``modules`` (VExpressModules), cast to the modules' dtype.

    ``strict``: any missing / unexpected / mis-shaped key or missing file raises
    :class:`CheckpointMismatchError` listing them per file, before any weight is changed. Not strict:
    loads every key that fits and logs the rest. Returns the per-file reports.
    """
    folder = Path(folder)
    reports = check_folder(folder, expected_shapes(modules))
    problems = [r for r in reports.values() if not r.ok]
    if problems and strict:
        raise CheckpointMismatchError(f"{folder}: checkpoint does not match the model:\n"
                                      + "\n".join(r.describe() for r in problems))
    for report in problems:
        log.warning("loading non-strictly:\n%s", report.describe())
    for stem in FILE_STEMS:  # denoising_unet before motion_module, as the official loader does
        report = reports[stem]
        if report.path is None:
            continue
        module = getattr(modules, FILE_MODULES[stem])
        target = module.state_dict()
        state = {k: v for k, v in read_state_dict(report.path).items()
                 if k in target and tuple(v.shape) == tuple(target[k].shape)}
        module.load_state_dict(state, strict=False)  # copy_ casts fp16 files to the modules' dtype
        log.info("loaded %s (%d tensors)", report.path, len(state))
        del state
    return reports


load_vexpress_checkpoint = load_vexpress_weights  # name used by the inference loader


def save_vexpress_weights(modules: nn.Module, folder: str | Path, config: Any = None,
                          dtype: torch.dtype | None = None, file_format: str = "safetensors",
                          with_motion_in_denoising: bool = True) -> dict[str, Path]:
    """Write the five files (``<stem>.safetensors``, or ``.bin`` via ``torch.save`` for the official code).

    ``config`` (a ModelConfig or the whole config tree) goes to ``config.yaml`` beside them. ``dtype``
    casts floating tensors (e.g. ``torch.float16`` like the official release). Files are written
    atomically (temporary name, then rename).
    """
    if file_format not in ("safetensors", "bin"):
        raise ValueError(f"file_format must be 'safetensors' or 'bin', got {file_format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for stem, state in file_state_dicts(modules, with_motion_in_denoising).items():
        tensors = _for_saving(state, dtype)
        path = folder / f"{stem}.{file_format}"
        tmp = path.with_name(f".{path.name}.tmp")
        if file_format == "safetensors":
            save_file(tensors, str(tmp), metadata={"format": "pt", "vexpress_file": stem})
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
        written[stem] = path
    if config is not None:
        from infra.config import save_config

        written["config"] = save_config(config, folder / CONFIG_NAME)
    return written


def _for_saving(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU, contiguous, optionally cast; tensors sharing storage are cloned (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensor = tensor.contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def load_checkpoint_config(folder: str | Path):
    """The ModelConfig saved beside the weights (``config.yaml``: a whole config tree or a model section)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    from infra.config import load_config
    from model.config import ModelConfig

    node = OmegaConf.load(path)
    if "model" in node and "preset" not in node:
        from infra.config_tree import load

        return load(path).model
    return load_config(ModelConfig, path)


# ------------------------------------------------------------------------------------------ CLI
def _model_config(preset: str | None, folder: Path | None):
    """``--preset`` name (configs/<preset>/stage1.yaml) or YAML path; else the folder's config.yaml; else sd15."""
    from infra.config_tree import load

    if preset is None and folder is not None:
        saved = load_checkpoint_config(folder)
        if saved is not None:
            return saved
    preset = preset or "sd15"
    return load(preset if preset.endswith(".yaml") else f"{preset}/stage1").model


def _meta_modules(cfg) -> nn.Module:
    from model.build import build_modules

    return build_modules(cfg, device="meta")


def verify_manifest(manifest_path: Path, modules: nn.Module) -> dict[str, FileReport]:
    """Compare the meta-built modules with a key/shape manifest ({"files": {"<stem>.bin": {"tensors": ...}}})."""
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{manifest_path}: not a state-dict manifest ({exc})") from exc
    expected = expected_shapes(modules)
    reports: dict[str, FileReport] = {}
    for stem in FILE_STEMS:
        entry = next((v for k, v in files.items() if Path(k).stem == stem), None)
        if entry is None:
            reports[stem] = FileReport(stem, None, notes=[f"{manifest_path.name} has no entry for {stem}"])
            continue
        found = {k: tuple(s) for k, s in entry["tensors"]}
        dtypes = Counter({dtype: len(found) for dtype in entry.get("dtype_at_construction", [])})
        name = next(k for k in files if Path(k).stem == stem)
        report = compare_shapes(stem, expected[stem], found, Path(f"{manifest_path.name}:{name}"), dtypes)
        if report.ok and list(found) != list(expected[stem]):
            report.notes.append("same keys and shapes, different order")
        if "num_params" in entry and entry["num_params"] != report.num_params:
            report.notes.append(f"manifest num_params {entry['num_params']:,} != listed {report.num_params:,}")
        reports[stem] = report
    return reports


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
    from infra.cli import Parser

    parser = Parser("python -m model.checkpoints", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="compare checkpoint files (or a manifest) with the model's keys/shapes",
                            sections=("model",))
    add_verify_arguments(verify)
    return _run_verify(parser.parse_args(argv))


def verify_main(argv: list[str] | None = None) -> int:
    """``vexpress verify``: the verify subcommand on its own."""
    from infra.cli import Parser

    parser = Parser("python -m model.checkpoints verify", description="compare checkpoint files (or a manifest) "
                    "with the model's keys and shapes", sections=("model",))
    add_verify_arguments(parser)
    return _run_verify(parser.parse_args(argv))


def _run_verify(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from infra.cli import run_cli

    return run_cli("checkpoints verify", lambda: _verify(args))


def _verify(args: argparse.Namespace) -> int:
    if args.folder is not None:
        from model.checkpoint_paths import resolve_checkpoint

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
