"""MLflow tracking of a training stage (rank 0 only): a child run under the training root's parent run.

The parent run is found (or created) by the tag ``vexpress.parent`` = ``tracking.parent_run`` (default: the
name of the output root, e.g. ``tiny`` for ``runs/tiny/stage1``), so stage I, II and III of one experiment
land under one parent, and evaluations of their checkpoints join it (``infra.tracking``). The child run id is
written to ``<output_dir>/mlflow_run.json`` so ``--resume`` keeps logging into the same child run (a new one,
with a warning, when that run was deleted or the store no longer has it), and evaluation finds the store and
parent. Params: the ``train``, ``data`` and ``model`` sections; tags: git commit and source; system metrics
while the stage runs. Store, experiment and the rest: ``infra/tracking.py``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from infra.tracking import (
    KIND_TAG,
    PARENT_TAG,
    TRAINING_SECTIONS,
    default_tracking_uri,
    experiment_id,
    find_parent,
    output_root,
    params_of,
    source_tags,
    start_system_metrics,
    ui_hint,
)

log = logging.getLogger(__name__)
ENTRY_POINT = "training/run.py"
__all__ = ["PARENT_TAG", "Tracker", "default_tracking_uri", "output_root"]


class Tracker:
    """Thin wrapper over ``MlflowClient``; every method is a no-op when disabled (ranks > 0).

    ``sections``: the config sections logged as params (the whole config is logged as an artifact by the caller).
    """

    def __init__(self, cfg: Any, enabled: bool, sections: tuple[str, ...] = TRAINING_SECTIONS) -> None:
        self.cfg, self.enabled, self.sections = cfg, enabled and cfg.tracking.enabled, sections
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.monitor = None
        if not self.enabled:
            return
        from mlflow.tracking import MlflowClient

        out = Path(cfg.train.output_dir)
        self.uri = cfg.tracking.tracking_uri or default_tracking_uri(out)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_file = out / "mlflow_run.json"

    def _parent(self, exp_id: str) -> str:
        key = self.cfg.tracking.parent_run or output_root(self.cfg.train.output_dir).name
        tags = source_tags(ENTRY_POINT)
        found = find_parent(self.client, exp_id, key)
        if found:
            for k, v in tags.items():  # the code of the latest stage
                self.client.set_tag(found, k, v)
            return found
        run = self.client.create_run(exp_id, run_name=key, tags={PARENT_TAG: key, KIND_TAG: "parent", **tags,
                                                                 **self.cfg.tracking.tags})
        return run.info.run_id

    def start(self, resume: bool) -> None:
        if not self.enabled:
            return
        self.experiment_id = experiment_id(self.client, self.cfg.tracking, self.uri)
        self.parent_id = self._parent(self.experiment_id)
        self.client.update_run(self.parent_id, status="RUNNING")
        if resume and self.run_file.is_file():
            run_id = json.loads(self.run_file.read_text())["run_id"]
            if self._run_exists(run_id):
                self.run_id = run_id
                self.client.update_run(self.run_id, status="RUNNING")
                log.info("MLflow: resuming child run %s", self.run_id)
                self._start_monitor(resume=True)
                return
            log.warning("MLflow: run %s (from %s) no longer exists in %s; logging the resumed training to a new run",
                        run_id, self.run_file, self.uri)
        stage = self.cfg.train.stage
        tags = {"mlflow.parentRunId": self.parent_id, "vexpress.stage": str(stage), KIND_TAG: "training",
                **source_tags(ENTRY_POINT), **self.cfg.tracking.tags}
        name = self.cfg.tracking.run_name or f"stage{stage}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps({"run_id": self.run_id, "parent_run_id": self.parent_id,
                                             "tracking_uri": self.uri, "experiment_id": self.experiment_id,
                                             "run_name": name, "stage": stage}))
        self.log_params(params_of(self.cfg, self.sections))
        self._start_monitor(resume=False)
        log.info("MLflow: experiment %s, parent %s, child run %s; %s", self.cfg.tracking.experiment,
                 self.parent_id, self.run_id, ui_hint(self.uri, self.experiment_id))

    def _start_monitor(self, resume: bool) -> None:
        self.monitor = start_system_metrics(self.cfg.tracking, self.run_id, self.uri, resume=resume)

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
        if self.monitor is not None:
            self.monitor.finish()  # flushes the last system metrics while the run is still open
            self.monitor = None
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status=status)
            # The parent is "running" only while one of its stages is; the next stage reopens it.
            self.client.set_terminated(self.parent_id, status=status)
