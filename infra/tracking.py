"""MLflow for training and evaluation: one ``tracking`` section, one store, one experiment, one story.

- **Store**: ``tracking.tracking_uri``, default ``sqlite:///<output root>/mlflow.db`` where the output root is the
  folder above ``train.output_dir`` (``runs/sd15`` for ``runs/sd15/stage1``); artifacts of a sqlite store go
  beside the database (``<db folder>/mlartifacts``, the default of ``infra/mlflow/server.sh``). Any MLflow
  server URI works (``http://mlflow:5000``).
- **Runs**: a parent run per training root (``tracking.parent_run``, default the root's name) with a child run per
  stage (``stage1`` ...) and one per evaluation (``eval stage3 step-000100``), all in ``tracking.experiment``.
  Evaluation finds the training's store, experiment and parent through the checkpoint it evaluates
  (``<stage output>/mlflow_run.json``), so it needs no tracking settings of its own.
- **Params** are the config sections a run reads (stage runs: ``train``, ``data``, ``model``; evaluation runs:
  ``eval``, ``inference``); the whole merged config is an artifact (``config.yaml``).
- **Tags**: the git commit, branch and dirty flag of the code that ran, the entry point, ``vexpress.kind``.
- **System metrics** (``tracking.system_metrics``): MLflow's monitor, ``system/cpu_utilization_percentage``,
  ``system/system_memory_usage_megabytes``, ... and ``system/gpu_*`` where NVML sees a GPU.
"""

from __future__ import annotations

import getpass
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.config import check, flatten

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PARENT_TAG = "vexpress.parent"
KIND_TAG = "vexpress.kind"  # parent | training | evaluation
TRAINING_SECTIONS = ("train", "data", "model")
EVALUATION_SECTIONS = ("eval", "inference")
DEFAULT_DESCRIPTION = (  # Markdown: the UI renders it (code spans keep the <placeholders>)
    "V-Express talking-head training and evaluation. One parent run per training root (`tracking.parent_run`); "
    "its children are the stage runs (`stage1`, `stage2`, `stage3`: params = the train, data and model sections, "
    "metrics loss, loss_mouth, lr, grad_norm, samples_per_s and `system/*`, artifacts config.yaml, weights/, "
    "validation/) and the evaluation runs (`eval stage<N> step-<S>`: metrics `<dataset>/<metric>`, artifacts "
    "table1.txt, metrics.json, per_video.csv). The tag `mlflow.source.git.commit` names the code that ran.")
UI_PORT = 5000


@dataclass
class TrackingConfig:
    """The ``tracking`` section: read by training (``training/tracking.py``) and evaluation (``evaluation/run.py``)."""

    tracking_uri: str = ""  # empty -> sqlite:///<output root>/mlflow.db (evaluation: the checkpoint's training store)
    experiment: str = "vexpress"
    description: str = DEFAULT_DESCRIPTION  # the experiment's description in the MLflow UI (set when created)
    run_name: str = ""  # child run name; empty -> "stage<N>" (training), "eval stage<N> step-<S>" (evaluation)
    parent_run: str = ""  # parent run key (tag vexpress.parent); empty -> name of the output root
    enabled: bool = True
    system_metrics: bool = True  # CPU, memory, disk, network (+ GPU where NVML sees one) as system/* metrics
    system_metrics_interval_s: float = 10.0
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(bool(self.experiment), "tracking.experiment", "must not be empty")
        check(self.system_metrics_interval_s > 0, "tracking.system_metrics_interval_s", "must be > 0")


# ------------------------------------------------------------------------------------------ store and experiment
def output_root(output_dir: str | Path) -> Path:
    return Path(output_dir).resolve().parent


def default_tracking_uri(output_dir: str | Path) -> str:
    return f"sqlite:///{output_root(output_dir) / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """``<db folder>/mlartifacts`` for a sqlite store; None (the server's default root) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def experiment_id(client: Any, tracking: TrackingConfig, uri: str) -> str:
    """The experiment ``tracking.experiment`` (created with its description and artifact folder when new)."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        if tracking.description and MLFLOW_RUN_NOTE not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, MLFLOW_RUN_NOTE, tracking.description)
        return exp.experiment_id
    tags = {MLFLOW_RUN_NOTE: tracking.description} if tracking.description else None
    return client.create_experiment(tracking.experiment, artifact_location=artifact_location(uri), tags=tags)


def params_of(cfg: Any, sections: tuple[str, ...]) -> dict[str, Any]:
    """The flattened config sections a run reads (``train.lr``, ``data.num_frames``, ...)."""
    return {k: v for k, v in flatten(cfg).items() if k.split(".", 1)[0] in sections}


# ------------------------------------------------------------------------------------------ source tags
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's source tags: entry point, user, and the git commit/branch/dirty flag when run from a checkout."""
    from mlflow.utils import mlflow_tags as t

    tags = {t.MLFLOW_SOURCE_NAME: entry_point, t.MLFLOW_SOURCE_TYPE: "LOCAL"}
    try:
        tags[t.MLFLOW_USER] = getpass.getuser()
    except (KeyError, OSError):
        pass
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags[t.MLFLOW_GIT_COMMIT] = commit
        tags[t.MLFLOW_GIT_BRANCH] = _git("rev-parse", "--abbrev-ref", "HEAD") or ""
        status = _git("status", "--porcelain", "--untracked-files=no")
        tags[t.MLFLOW_GIT_DIRTY] = str(bool(status)).lower()
    return tags


# ------------------------------------------------------------------------------------------ system metrics
def start_system_metrics(tracking: TrackingConfig, run_id: str, uri: str, resume: bool = False) -> Any:
    """MLflow's system-metrics monitor on ``run_id`` (a thread); None when disabled. Stop it with ``.finish()``."""
    if not tracking.system_metrics:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=tracking.system_metrics_interval_s,
                                   resume_logging=resume, tracking_uri=uri)
    monitor.start()
    return monitor


# ------------------------------------------------------------------------------------------ where to look
def runs_table_url(base_url: str, exp_id: str) -> str:
    """The experiment's runs table. MLflow 3's UI opens an experiment in its GenAI (traces) view otherwise."""
    return f"{base_url.rstrip('/')}/#/experiments/{exp_id}?workflowType=machine_learning"


def ui_hint(uri: str, exp_id: str) -> str:
    """How to see the runs: the URL for a server, the command and URL for a local store."""
    if uri.startswith(("http://", "https://")):
        return f"MLflow runs: {runs_table_url(uri, exp_id)}"
    command = f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {UI_PORT}"
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        command = f"bash infra/mlflow/server.sh {uri} {db.parent / 'mlartifacts'} {UI_PORT}"
    return f"MLflow runs: {command}, then open {runs_table_url(f'http://127.0.0.1:{UI_PORT}', exp_id)}"


def read_run_file(path: Path | None) -> dict[str, str] | None:
    """``<stage output>/mlflow_run.json`` (run, parent, store of a tracked training), None when absent or torn."""
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        log.warning("%s: unreadable; the evaluation run will not be nested under the training", path)
        return None
    return record if isinstance(record, dict) and record.get("tracking_uri") else None


def find_parent(client: Any, exp_id: str, key: str) -> str | None:
    """The run id of the parent run tagged ``vexpress.parent = key`` in the experiment, if any."""
    found = client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{key}'", max_results=1)
    return found[0].info.run_id if found else None


def _live_run(client: Any, run_id: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage != "deleted" else None


# ------------------------------------------------------------------------------------------ evaluation runs
def _checkpoint_stage(resolved: Any, record: dict | None) -> int | None:
    if record and record.get("stage"):
        return int(record["stage"])
    if resolved is not None and resolved.config is not None:
        from omegaconf import OmegaConf

        return int(OmegaConf.load(resolved.config).train.stage)
    return None


def evaluation_run_name(resolved: Any, stage: int | None) -> str:
    """``eval stage3 step-000100`` for a trained checkpoint, ``eval <folder>`` for an official one."""
    if resolved is None:
        return "eval"
    if stage is not None and resolved.step is not None:
        return f"eval stage{stage} step-{resolved.step:06d}"
    return f"eval {resolved.weights.name if resolved.weights.name != 'weights' else resolved.given.name}"


def log_evaluation_run(cfg: Any, checkpoint: str | Path | None, params: dict[str, str],
                       results: dict[str, dict[str, float]], tags: dict[str, str], artifacts: list[Path],
                       entry_point: str = "evaluation/run.py") -> str:
    """One evaluation run, nested under the parent run of the training that wrote ``checkpoint``; its run id.

    The store is ``tracking.tracking_uri``, else the training's (``mlflow_run.json`` beside the checkpoint), else
    the default store of ``train.output_dir``. Without a tracked training (an official folder) the run stands
    alone in ``tracking.experiment``."""
    if not cfg.tracking.enabled:
        return ""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from evaluation.report import numeric_metrics
    from model.checkpoint_paths import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint) if checkpoint else None
    record = read_run_file(resolved.run_file) if resolved is not None else None
    uri = cfg.tracking.tracking_uri or (record or {}).get("tracking_uri") or default_tracking_uri(cfg.train.output_dir)
    client = MlflowClient(tracking_uri=uri)
    parent = _live_run(client, record.get("parent_run_id")) if record and record["tracking_uri"] == uri else None
    if parent is not None:
        exp_id = parent.info.experiment_id
    else:
        exp_id = experiment_id(client, cfg.tracking, uri)
        if resolved is not None and resolved.stage_dir is not None:
            key = cfg.tracking.parent_run or resolved.stage_dir.resolve().parent.name
            parent = _live_run(client, find_parent(client, exp_id, key))
    stage = _checkpoint_stage(resolved, record)
    run_tags = {**source_tags(entry_point), KIND_TAG: "evaluation", **cfg.tracking.tags, **tags}
    if parent is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent.info.run_id
    if stage is not None:
        run_tags["vexpress.checkpoint_stage"] = str(stage)
    if resolved is not None and resolved.step is not None:
        run_tags["vexpress.checkpoint_step"] = str(resolved.step)
    name = cfg.tracking.run_name or evaluation_run_name(resolved, stage)
    run_id = client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id
    status = "FAILED"
    try:
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for d, m in results.items() for k, v in numeric_metrics(d, m).items()]
        for i in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[i:i + 500])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    log.info("MLflow: evaluation run %r (%s)%s; %s", name, run_id,
             f" under parent {parent.info.run_id}" if parent is not None else "", ui_hint(uri, exp_id))
    return run_id
