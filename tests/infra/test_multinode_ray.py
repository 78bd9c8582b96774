"""Two Ray nodes on 127.0.0.1 (tests/infra/loopback_ray.py) run `infra/preprocess.py --address ...`:

- the work is spread over both nodes (Ray's state API: tasks and actors on each node) and the index equals the
  one-node run's, with token authentication on and every Ray process listening on loopback only;
- the worker node's raylet is SIGKILLed in the middle of a job: the job finishes on the head with the same index.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from preprocessing import shards
from preprocessing.ray_reaper import cluster_processes
from tests.infra.conftest import PREPROCESS_OVERRIDES, REPO, ListenWatch, short_tmp, tree

# What a job's tasks and actors are called in Ray's state API
STAGE_TASKS = {"probe_task", "decode_task", "crop_encode_task", "commit_task"}
ACTORS = {"FaceActor", "AudioActor"}


class TwoNodes:
    """The cluster process of tests/infra/loopback_ray.py, driven over its stdin."""

    def __init__(self, root: Path) -> None:
        self.root, self.home = root, root / "home"
        (self.home / ".ray").mkdir(parents=True)
        # Ray 2.60 token auth, as `ray get-auth-token --generate` leaves it: every process of the cluster and
        # every driver present this token (they find it in ~/.ray/auth_token).
        (self.home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
        info = root / "info.json"
        self.env = {**os.environ, "HOME": str(self.home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.infra.loopback_ray", str(info), str(root)],
                                     cwd=REPO, env={**self.env, "RAY_AUTH_MODE": "token"}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(root / "cluster.log", "w"), text=True)
        try:
            deadline = time.time() + 300
            while not info.exists():
                if self.proc.poll() is not None or time.time() > deadline:
                    log = (root / "cluster.log").read_text()[-3000:]
                    raise RuntimeError(f"the two-node cluster did not start: {log}")
                time.sleep(0.2)
        except BaseException:  # a start failure or a test timeout: stop what did start
            self.stop()
            raise
        self.info = json.loads(info.read_text())
        self.address = self.info["gcs_address"]
        self.node_ids = {n["role"]: n["node_id"] for n in self.info["nodes"]}
        self.roles = {v: k for k, v in self.node_ids.items()}
        self.raylets = {n["role"]: n["raylet_pid"] for n in self.info["nodes"]}

    def state(self) -> dict:
        self.proc.stdin.write("state\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def pids(self) -> set[int]:
        return tree([self.proc.pid])

    def stop(self) -> None:
        from preprocessing.ray_reaper import reap

        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for node in ("head", "worker"):  # anything of either node that outlived the cluster utility's shutdown
            if left := reap(str(self.root / node), grace_s=2.0):
                print(f"{node} node: {len(left)} processes outlived the cluster utility's shutdown: {left}")


@pytest.fixture(scope="module")
def two_nodes():
    cluster = TwoNodes(short_tmp("vx2n"))
    yield cluster
    cluster.stop()
    left = [p for p in psutil.process_iter(["cmdline"]) if any(str(cluster.root) in a for a in p.info["cmdline"] or [])]
    assert not left, f"processes of the two-node cluster left: {[p.pid for p in left]}"
    shutil.rmtree(cluster.root, ignore_errors=True)


def start_driver(cluster: TwoNodes, inputs: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "infra" / "preprocess.py"), "--address", cluster.address, "--input",
           str(inputs), "--output", str(out), *PREPROCESS_OVERRIDES]
    return subprocess.Popen(cmd, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def new_job_state(cluster: TwoNodes, seen_jobs: set[str]) -> dict:
    """State API records of the jobs not in ``seen_jobs`` (the last job run), which are then added to it."""
    state = cluster.state()
    jobs = {t["job_id"] for t in state["tasks"] if t["job_id"]} - seen_jobs
    seen_jobs |= jobs
    return {"tasks": [t for t in state["tasks"] if t["job_id"] in jobs],
            "actors": [a for a in state["actors"] if a["job_id"] in jobs], "nodes": state["nodes"]}


def placement(cluster: TwoNodes, job: dict) -> dict[str, Counter]:
    """Per node role: how many of each task / actor of the job ran there (printed: what ran where)."""
    where: dict[str, Counter] = {"head": Counter(), "worker": Counter()}
    for t in job["tasks"]:
        if t["node_id"] in cluster.roles:
            where[cluster.roles[t["node_id"]]][t["name"]] += 1
    for a in job["actors"]:
        if a["node_id"] in cluster.roles:
            where[cluster.roles[a["node_id"]]][f"actor {a['class_name']}"] += 1
    print({role: dict(sorted(c.items())) for role, c in where.items()})
    return where


SEEN_JOBS: set[str] = set()


@pytest.mark.slow
def test_two_nodes_share_the_job_and_write_the_one_node_index(two_nodes, multinode_inputs, one_node_output, tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    driver = start_driver(two_nodes, multinode_inputs, out)
    watch = ListenWatch(lambda: two_nodes.pids() | tree([driver.pid]))
    log, _ = driver.communicate(timeout=900)
    listening = watch.stop()
    assert driver.returncode == 0, log[-4000:]
    print(f"two-node job: {time.perf_counter() - t0:.1f} s")

    assert shards.read_index(out) == shards.read_index(one_node_output)
    assert (out / "rejected.jsonl").read_text() == (one_node_output / "rejected.jsonl").read_text()

    job = new_job_state(two_nodes, SEEN_JOBS)
    where = placement(two_nodes, job)
    for role in ("head", "worker"):
        assert STAGE_TASKS & set(where[role]), f"no pipeline task ran on the {role} node: {where}"
        assert {f"actor {a}" for a in ACTORS} & set(where[role]), f"no model actor ran on the {role} node: {where}"
    assert {t["state"] for t in job["tasks"] if t["name"] in STAGE_TASKS} == {"FINISHED"}

    assert listening and not watch.not_loopback(), watch.not_loopback()
    gcs_port = int(two_nodes.address.rsplit(":", 1)[1])
    assert ("127.0.0.1", gcs_port) in listening or ("::ffff:127.0.0.1", gcs_port) in listening


@pytest.mark.slow
def test_losing_the_worker_node_mid_job_keeps_the_index(two_nodes, multinode_inputs, one_node_output, tmp_path):
    out = tmp_path / "out"
    driver = start_driver(two_nodes, multinode_inputs, out)
    committed = out / "work" / "videos"
    deadline = time.time() + 600
    while len(list(committed.glob("*.json"))) < 2 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert driver.poll() is None, "the job finished before the worker node could be killed"
    done_at_kill = len(list(committed.glob("*.json")))
    os.kill(two_nodes.raylets["worker"], signal.SIGKILL)  # the worker node's raylet, by pid
    t_kill = time.perf_counter()
    log, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, log[-4000:]
    survivors = [p.name() for p in cluster_processes(str(two_nodes.root / "worker"))]
    print(f"worker node processes alive after its raylet was killed and the job ended: {survivors}")
    print(f"killed the worker raylet with {done_at_kill}/6 videos committed; the job ended "
          f"{time.perf_counter() - t_kill:.1f} s later")

    assert shards.read_index(out) == shards.read_index(one_node_output)  # nothing lost, nothing duplicated
    assert (out / "rejected.jsonl").read_text() == (one_node_output / "rejected.jsonl").read_text()

    job = new_job_state(two_nodes, SEEN_JOBS)
    nodes = {n["node_id"]: n["state"] for n in job["nodes"]}
    assert nodes[two_nodes.node_ids["worker"]] == "DEAD" and nodes[two_nodes.node_ids["head"]] == "ALIVE"
    where = placement(two_nodes, job)
    assert STAGE_TASKS & set(where["worker"]), f"the worker node ran nothing of this job before it died: {where}"
    after = [a for a in job["actors"] if a["node_id"] == two_nodes.node_ids["head"] and a["class_name"] in ACTORS]
    assert len(after) >= 4, job["actors"]  # the pools live on the head after the loss
