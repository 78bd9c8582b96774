"""An `mlflow server` on 127.0.0.1 over a store written by our tracker serves the runs over REST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.net import free_port

REPO = Path(__file__).resolve().parents[2]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _write_store(tmp_path: Path) -> str:
    """Two stage runs under one parent, as training writes them."""
    from infra.config_tree import load
    from training.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for stage in (1, 2):
        cfg = load("tiny/stage1", [f"train.stage={stage}", f"train.output_dir={tmp_path / f'stage{stage}'}",
                                   f"tracking.tracking_uri={uri}", "tracking.experiment=served"])
        tracker = Tracker(cfg, enabled=True)
        tracker.start(resume=False)
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + stage)}, step=step)
        tracker.end()
    return uri


@pytest.mark.slow
def test_mlflow_server_serves_training_runs(tmp_path):
    uri = _write_store(tmp_path)
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        ["bash", str(REPO / "infra/mlflow/server.sh"), uri, str(tmp_path / "artifacts"), str(port), "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.time() + 90
        while True:
            try:
                exp = _post(f"{base}/experiments/get-by-name", {})  # noqa: F841 (bad request is fine)
            except urllib.error.HTTPError:
                break  # the server answers
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up on 127.0.0.1")
                time.sleep(1)
                continue
            break
        with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=served", timeout=10) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        runs = _post(f"{base}/runs/search", {"experiment_ids": [exp_id]})["runs"]
        by_stage = {r["data"].get("tags") and {t["key"]: t["value"] for t in r["data"]["tags"]}.get("vexpress.stage"): r
                    for r in runs}
        assert {"1", "2"} <= set(by_stage)  # two child runs (+ the parent)
        parent_ids = {{t["key"]: t["value"] for t in by_stage[s]["data"]["tags"]}["mlflow.parentRunId"] for s in "12"}
        assert len(parent_ids) == 1 and parent_ids <= {r["info"]["run_id"] for r in runs}
        run_id = by_stage["2"]["info"]["run_id"]
        with urllib.request.urlopen(f"{base}/metrics/get-history?run_id={run_id}&metric_key=loss", timeout=10) as r:
            history = sorted((m["step"], m["value"]) for m in json.load(r)["metrics"])
        assert history == [(0, 0.5), (1, pytest.approx(1 / 3)), (2, 0.25)]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
