"""What a ``--checkpoint`` path names: the one place that turns it into the five weight files and their config.

Accepted forms (``resolve_checkpoint``):

- a **stage output folder** (``train.output_dir``, e.g. ``runs/sd15/stage3``): its latest checkpoint's export,
  found through ``checkpoints/latest``;
- its **checkpoints folder** (``runs/sd15/stage3/checkpoints``): the same;
- a **step folder** (``runs/sd15/stage3/checkpoints/step-000100``): that step's ``export/``;
- an **export folder** (``.../step-000100/export``): the five ``.safetensors`` files and ``config.yaml``;
- an **official five-file folder** (``denoising_unet.bin``, ``reference_net.bin``, ``motion_module.bin``,
  ``v_kps_guider.bin``, ``audio_projection.bin``), or a folder whose ``weights/`` subfolder holds them.

The layout is the one ``training.trainer`` writes: ``<output_dir>/checkpoints/step-000100/{config.yaml, export/}``,
``<output_dir>/checkpoints/latest`` (the newest step's folder name) and ``<output_dir>/mlflow_run.json`` (the
MLflow runs that trained it). The config saved beside the weights is the export's ``config.yaml`` when it holds a
whole config tree, else the step folder's; official folders have none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LATEST = "latest"  # <output_dir>/checkpoints/latest: the newest complete step folder's name
CHECKPOINTS = "checkpoints"
EXPORT = "export"
CONFIG_NAME = "config.yaml"
RUN_FILE = "mlflow_run.json"  # <output_dir>/mlflow_run.json, written by training.tracking
_STEP = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a ``--checkpoint`` argument leads."""

    given: Path  # what the user named
    weights: Path  # the folder holding the five files
    form: str  # stage | checkpoints | step | export | five-file
    config: Path | None  # the whole config tree saved beside the weights (None: official folders)
    step: int | None  # the training step of the weights, when known
    stage_dir: Path | None  # the stage output folder (train.output_dir) the weights came from, when known

    @property
    def run_file(self) -> Path | None:
        """``<stage_dir>/mlflow_run.json`` when the training that wrote these weights was tracked."""
        if self.stage_dir is None or not (self.stage_dir / RUN_FILE).is_file():
            return None
        return self.stage_dir / RUN_FILE

    def describe(self) -> str:
        step = f", step {self.step}" if self.step is not None else ""
        return f"{self.given} ({self.form}{step}) -> {self.weights}"


def step_of(name: str) -> int | None:
    m = _STEP.match(name)
    return int(m.group(1)) if m else None


def has_weights(folder: Path) -> bool:
    from model.checkpoints import find_checkpoint_file

    return folder.is_dir() and find_checkpoint_file(folder, "denoising_unet") is not None


def _latest_step_folder(checkpoints: Path) -> Path:
    latest = checkpoints / LATEST
    if not latest.is_file():
        steps = sorted(p.name for p in checkpoints.glob("step-*") if p.is_dir())
        found = f" ({len(steps)} step folders but no {LATEST} file: the run stopped before its first save ended)" \
            if steps else ""
        raise FileNotFoundError(f"{checkpoints}: no {LATEST} file{found}; train the stage (or resume it) first")
    tag = latest.read_text().strip()
    folder = checkpoints / tag
    if not folder.is_dir():
        raise FileNotFoundError(f"{latest}: names {tag}, which does not exist (was it pruned or moved?)")
    return folder


def _whole_tree(path: Path) -> bool:
    """True for a saved ``VExpressConfig`` (sections ``model``, ``train``, ...), False for a model section alone."""
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - an unreadable file is not a config tree; loading it later names the error
        return False
    return OmegaConf.is_dict(node) and "model" in node and "train" in node


def _config_beside(weights: Path) -> Path | None:
    for candidate in (weights / CONFIG_NAME, weights.parent / CONFIG_NAME):
        if candidate.is_file() and _whole_tree(candidate):
            return candidate
    return None


def _from_export(given: Path, weights: Path, form: str) -> ResolvedCheckpoint:
    step_dir = weights.parent if weights.name == EXPORT else None
    step = step_of(step_dir.name) if step_dir is not None else None
    stage_dir = None
    if step is not None and step_dir.parent.name == CHECKPOINTS:
        stage_dir = step_dir.parent.parent
    return ResolvedCheckpoint(given, weights, form, _config_beside(weights), step, stage_dir)


def resolve_checkpoint(path: str | Path) -> ResolvedCheckpoint:
    """The weights folder, saved config, step and stage folder ``path`` names (see the module docstring).

    Raises ``FileNotFoundError`` naming the path and what was looked for."""
    given = Path(path)
    if not given.exists():
        raise FileNotFoundError(f"{given}: checkpoint folder not found")
    if not given.is_dir():
        raise NotADirectoryError(f"{given}: a checkpoint is a folder (stage output, step, export or five files)")
    if has_weights(given):
        form = EXPORT if given.name == EXPORT else "five-file"
        return _from_export(given, given, form)
    if has_weights(given / "weights"):
        return _from_export(given, given / "weights", "five-file")
    if step_of(given.name) is not None:
        if has_weights(given / EXPORT):
            return _from_export(given, given / EXPORT, "step")
        raise FileNotFoundError(f"{given}: step folder without {EXPORT}/ weights (an interrupted save?)")
    for checkpoints, form in ((given, "checkpoints"), (given / CHECKPOINTS, "stage")):
        if (checkpoints / LATEST).is_file() or any(checkpoints.glob("step-*")):
            step_dir = _latest_step_folder(checkpoints)
            if not has_weights(step_dir / EXPORT):
                raise FileNotFoundError(f"{step_dir}: latest checkpoint has no {EXPORT}/ weights")
            return _from_export(given, step_dir / EXPORT, form)
    raise FileNotFoundError(
        f"{given}: no V-Express weights found: expected a stage output folder (with {CHECKPOINTS}/{LATEST}), a "
        f"step folder (step-N/{EXPORT}/), an export folder or the five files (denoising_unet.safetensors/.bin/"
        ".pth, ...) here or in weights/")
