"""A two-node Ray cluster on 127.0.0.1 for tests: a head and one worker node, each with its own raylet, object
store, temp dir, ports and CPUs, started with Ray's own multi-node test utility (``ray.cluster_utils.Cluster``).

Why not ``ray start --head`` + ``ray start --address`` on one host: on Linux ``ray start`` turns a node address of
127.0.0.1 into the machine's routable address (its ``resolve_ip_for_localhost``), and then gcs_server, raylet and
the agents listen on all interfaces; Ray's local-only mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the mode it
uses on macOS/Windows) keeps every process on 127.0.0.1 but makes ``ray start --address`` refuse to add a node.
The cluster utility starts the same processes (gcs_server, raylet, agents) without that CLI check.

Run as a process owned by the test (stdin is its lifeline)::

    python -m tests.infra.loopback_ray <info.json> <temp root> [head_cpus worker_cpus]

It writes ``info.json`` (GCS address, dashboard URL, per node: id, raylet pid, temp dir), then reads commands on
stdin, one per line, answering one JSON line each: ``state`` (tasks, actors and nodes from Ray's state API) and
``quit`` (or end of input): stop both nodes by pid, then exit. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

from infra.net import free_port

OBJECT_STORE_BYTES = 400 * 2**20  # per node (the utility's default, 150 MiB, spills a few decoded clips)
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # local-only mode: every Ray process binds 127.0.0.1
    # A dead node is declared dead after ~3 missed 1 s health checks instead of Ray's default ~5 x 3 s.
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def start(temp_root: Path, head_cpus: int, worker_cpus: int):
    os.environ.update(LOOPBACK_ENV)
    # The utility records the cluster address in <RAY_TMPDIR>/ray/ray_current_cluster: keep it in the test's dir.
    os.environ["RAY_TMPDIR"] = str(temp_root)
    (temp_root / "ray").mkdir(parents=True, exist_ok=True)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read from the environment at import; this process imported it
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    # Fixed defaults (44227, 44217, 52365) would collide with any other Ray head on the machine.
    os.environ.update(DASHBOARD_METRIC_PORT=str(free_port()), AUTOSCALER_METRIC_PORT=str(free_port()))
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={
        "num_cpus": head_cpus, "temp_dir": str(temp_root / "head"), "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": None, "resources": {"head": 1}, "object_store_memory": OBJECT_STORE_BYTES})
    worker = cluster.add_node(num_cpus=worker_cpus, temp_dir=str(temp_root / "worker"), resources={"worker": 1},
                              object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    return cluster, worker, f"http://127.0.0.1:{dashboard_port}"


def node_info(node, role: str) -> dict:
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    return {"role": role, "node_id": node.node_id, "raylet_pid": raylet.pid, "temp_dir": node.get_temp_dir_path(),
            "ip": node.node_ip_address}


def state(dashboard: str) -> dict:
    from ray.util import state as st

    tasks = st.list_tasks(address=dashboard, limit=10_000, raise_on_missing_output=False, detail=True)
    actors = st.list_actors(address=dashboard, limit=10_000, raise_on_missing_output=False, detail=True)
    nodes = st.list_nodes(address=dashboard, limit=100, raise_on_missing_output=False)
    return {"tasks": [{"name": t.name, "node_id": t.node_id, "state": t.state, "job_id": t.job_id,
                       "type": t.type} for t in tasks],
            "actors": [{"class_name": a.class_name, "node_id": a.node_id, "state": a.state, "job_id": a.job_id,
                        "num_restarts": int(a.num_restarts)} for a in actors],
            "nodes": [{"node_id": n.node_id, "state": n.state} for n in nodes]}


def die_with_parent() -> None:
    """SIGTERM when the test process goes away (even killed), which ends in Cluster.shutdown below."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    die_with_parent()
    info_path, temp_root = Path(argv[0]), Path(argv[1])
    head_cpus, worker_cpus = (int(argv[2]), int(argv[3])) if len(argv) > 3 else (2, 2)
    cluster, worker, dashboard = start(temp_root, head_cpus, worker_cpus)
    try:
        info = {"gcs_address": cluster.address, "dashboard": dashboard,
                "nodes": [node_info(cluster.head_node, "head"), node_info(worker, "worker")]}
        tmp = info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, info_path)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            reply = state(dashboard) if command == "state" else {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
