"""MLflow tracking: a parent run per experiment, a child run per stage. Rank 0 only.

The parent run is found (or created) by the tag ``vexpress.parent`` = ``tracking.parent_run`` (default: the
name of the output root, e.g. ``tiny`` for ``runs/tiny/stage1``), so stage I, II and III of one experiment
land under one parent. The child run id is written to ``<output_dir>/mlflow_run.json`` so ``--resume`` keeps
logging into the same child run (a new one, with a warning, when that run was deleted or the store no longer
has it). Default tracking URI: ``sqlite:///<output root>/mlflow.db``, artifacts in
``<output root>/mlartifacts``; any MLflow server URI works.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from infra.config import flatten

log = logging.getLogger(__name__)
PARENT_TAG = "vexpress.parent"


def output_root(output_dir: str | Path) -> Path:
    return Path(output_dir).resolve().parent


def default_tracking_uri(output_dir: str | Path) -> str:
    return f"sqlite:///{output_root(output_dir) / 'mlflow.db'}"


class Tracker:
    """Thin wrapper over ``MlflowClient``; every method is a no-op when disabled (ranks > 0)."""

    def __init__(self, cfg: Any, enabled: bool) -> None:
        self.cfg, self.enabled = cfg, enabled and cfg.tracking.enabled
        self.run_id: str | None = None
        self.parent_id: str | None = None
        if not self.enabled:
            return
        from mlflow.tracking import MlflowClient

        out = Path(cfg.train.output_dir)
        self.uri = cfg.tracking.tracking_uri or default_tracking_uri(out)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_file = out / "mlflow_run.json"

    def _experiment_id(self) -> str:
        name = self.cfg.tracking.experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:"):
            artifacts = (output_root(self.cfg.train.output_dir) / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=artifacts)

    def _parent(self, experiment_id: str) -> str:
        key = self.cfg.tracking.parent_run or output_root(self.cfg.train.output_dir).name
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{key}'",
                                        max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=key, tags={PARENT_TAG: key, **self.cfg.tracking.tags})
        return run.info.run_id

    def start(self, resume: bool) -> None:
        if not self.enabled:
            return
        experiment_id = self._experiment_id()
        self.parent_id = self._parent(experiment_id)
        self.client.update_run(self.parent_id, status="RUNNING")
        if resume and self.run_file.is_file():
            run_id = json.loads(self.run_file.read_text())["run_id"]
            if self._run_exists(run_id):
                self.run_id = run_id
                self.client.update_run(self.run_id, status="RUNNING")
                log.info("MLflow: resuming child run %s", self.run_id)
                return
            log.warning("MLflow: run %s (from %s) no longer exists in %s; logging the resumed training to a new run",
                        run_id, self.run_file, self.uri)
        stage = self.cfg.train.stage
        tags = {"mlflow.parentRunId": self.parent_id, "vexpress.stage": str(stage), **self.cfg.tracking.tags}
        run = self.client.create_run(experiment_id, run_name=self.cfg.tracking.run_name or f"stage{stage}", tags=tags)
        self.run_id = run.info.run_id
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps({"run_id": self.run_id, "parent_run_id": self.parent_id,
                                             "tracking_uri": self.uri}))
        self.log_params(flatten(self.cfg))
        log.info("MLflow: experiment %s, parent %s, child run %s (%s)", self.cfg.tracking.experiment,
                 self.parent_id, self.run_id, self.uri)

    def _run_exists(self, run_id: str) -> bool:
        """False for a run deleted in the UI or a tracking store that no longer has it (e.g. a new database)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage != "deleted"
        except MlflowException:
            return False

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status=status)
            # The parent is "running" only while one of its stages is; the next stage reopens it.
            self.client.set_terminated(self.parent_id, status=status)
