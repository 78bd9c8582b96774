"""Test scaffolding: ``infra/mlflow/server.sh`` (a lean ``mlflow server``) on 127.0.0.1, stopped on exit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from infra.net import free_port

REPO = Path(__file__).resolve().parents[1]


class Rest:
    """GET/POST on the server's REST API (``/api/2.0/mlflow/...``) and its UI routes."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, route: str, **query) -> dict:
        url = f"{self.base}/api/2.0/mlflow/{route}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def post(self, route: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base}/api/2.0/mlflow/{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def raw(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.base}/{path.lstrip('/')}", timeout=30) as r:
            return r.read()


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifact_root: Path, timeout_s: float = 120) -> Iterator[Rest]:
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(["bash", str(REPO / "infra/mlflow/server.sh"), backend_uri, str(artifact_root),
                               str(port), "127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    rest = Rest(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                rest.get("experiments/search", max_results=1)
                break
            except (OSError, urllib.error.HTTPError):
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not come up on 127.0.0.1") from None
                time.sleep(1)
        yield rest
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
