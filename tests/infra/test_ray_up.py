"""`ray up` / `ray submit` / `ray down` with infra/ray/local-cluster.yaml against a host reached over a
test-owned sshd on 127.0.0.1 (tests/infra/sshd.py), as docs/multi-node.md tells users to run them.

The YAML is the shipped one with only what a one-host rehearsal must change (see ``rehearsal_config``): the host
list (head 127.0.0.1, no workers), the SSH user and key, the environment the existing venv brings instead of
being built by pip, and a head that listens on loopback only, on free ports. Two nodes of one host are what
tests/infra/test_multinode_ray.py runs: the local provider names nodes by IP, and a worker node on 127.0.0.1 next
to a head on 127.0.0.1 cannot be expressed (worker_ips must differ from head_ip), while another loopback address
(127.0.0.2) would make Ray bind every interface (only exactly 127.0.0.1 keeps it on loopback).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from infra.net import free_port
from preprocessing import shards
from tests.infra.conftest import PREPROCESS_OVERRIDES, REPO, ListenWatch, short_tmp, tree

SHIPPED = REPO / "infra" / "ray" / "local-cluster.yaml"
RAY = str(Path(sys.executable).parent / "ray")


def rehearsal_config(server, cluster_name: str, out: Path) -> dict:
    cfg = yaml.safe_load(SHIPPED.read_text())
    cfg["cluster_name"] = cluster_name
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["max_workers"] = 0
    cfg["auth"] = {"ssh_user": server.user, "ssh_private_key": str(server.key)}
    # setup_commands: the shipped ones build a venv with pip; here the test's venv is linked instead (no
    # network, same packages), and PYTHONPATH stands in for `pip install -e ~/vexpress` (it must not repoint the
    # shared venv's editable install). The shipped ~/.bashrc line (activate the venv + scripts/env.sh) stays.
    (bashrc_line,) = [c for c in cfg["setup_commands"] if "bashrc" in c]
    cfg["setup_commands"] = [f"ln -sfn {sys.prefix} ~/vexpress/.venv", bashrc_line,
                             "grep -q PYTHONPATH ~/.bashrc || echo 'export PYTHONPATH=~/vexpress' >> ~/.bashrc"]
    # the head on loopback only, on free ports, with 2 CPUs (the shipped `nproc - 2` leaves none on 2 cores)
    stop, start = cfg["head_start_ray_commands"]
    assert stop == "ray stop" and "--port=6379" in start and "--num-cpus=$(( $(nproc) - 2 ))" in start, start
    loopback = (f"--port={free_port()} --node-ip-address=127.0.0.1 --dashboard-port={free_port()} "
                f"--dashboard-agent-listen-port={free_port()} --ray-client-server-port={free_port()} "
                f"--min-worker-port=0 --max-worker-port=0 --object-store-memory={400 * 2**20}")
    start = start.replace("--port=6379", loopback).replace("--num-cpus=$(( $(nproc) - 2 ))", "--num-cpus=2")
    cfg["head_start_ray_commands"] = [stop, start]
    path = out / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def ray_cli(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([RAY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"ray {args[0]} failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc


@pytest.mark.slow
def test_ray_up_submit_down_with_the_local_provider(sshd, multinode_inputs, one_node_output, tmp_path):
    if not sshd.isolated:
        pytest.skip("needs PID namespaces (root): `ray up`/`ray down` run `ray stop`, which stops every Ray process "
                    "it can see on the host; the test sshd's own PID namespace limits that to the rehearsal host")
    # The host's own setup, done once by an admin on a real cluster: loopback-only Ray (local-only mode), Ray's
    # temp dir and the head's metric ports (fixed defaults otherwise) kept to this rehearsal.
    host_tmp = sshd.root / "t"
    (sshd.home / ".bashrc").write_text(
        f"export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_TMPDIR={host_tmp} RAY_USAGE_STATS_ENABLED=0\n"
        f"export DASHBOARD_METRIC_PORT={free_port()} AUTOSCALER_METRIC_PORT={free_port()}\n")
    # This machine (where `ray up` runs): its own home and Ray temp dir, and the cluster's token made here.
    local_home = short_tmp("vxl")
    env = sshd.env(HOME=str(local_home), RAY_TMPDIR=str(local_home), RAY_USAGE_STATS_ENABLED="0")
    ray_cli(["get-auth-token", "--generate"], env, 60)
    name = f"vexpress-rehearsal-{sshd.port}"
    rehearsal_config(sshd, name, tmp_path)
    config = str(tmp_path / "cluster.yaml")

    watch = ListenWatch(lambda: tree([sshd.proc.pid]))
    t0 = time.perf_counter()
    ray_cli(["up", "-y", "--no-config-cache", "--disable-usage-stats", config], env, 600)
    t_up = time.perf_counter() - t0
    assert (sshd.home / "vexpress" / "infra" / "preprocess.py").is_file()  # file_mounts rsynced the repository
    assert (sshd.home / ".ray" / "auth_token").read_text() == (local_home / ".ray" / "auth_token").read_text()
    # what the head's autoscaler would use to reach worker_ips hosts
    assert (sshd.home / "ray_bootstrap_config.yaml").is_file() and (sshd.home / "ray_bootstrap_key.pem").is_file()

    out = tmp_path / "out"
    t0 = time.perf_counter()
    submit = ray_cli(["submit", "--no-config-cache", config, str(REPO / "infra" / "preprocess.py"), "--",
                      "--address", "auto", "--input", str(multinode_inputs), "--output", str(out),
                      *PREPROCESS_OVERRIDES], env, 900)
    t_submit = time.perf_counter() - t0
    assert "[preprocess] done" in submit.stdout + submit.stderr
    assert shards.read_index(out) == shards.read_index(one_node_output)
    assert (out / "rejected.jsonl").read_text() == (one_node_output / "rejected.jsonl").read_text()

    t0 = time.perf_counter()
    ray_cli(["down", "-y", config], env, 300)
    t_down = time.perf_counter() - t0
    deadline = time.time() + 30  # ssh control connections linger up to ControlPersist (10 s)
    while sshd.processes() and time.time() < deadline:
        time.sleep(0.5)
    listening = watch.stop()
    print(f"ray up {t_up:.1f} s, ray submit {t_submit:.1f} s, ray down {t_down:.1f} s")
    shutil.rmtree(local_home, ignore_errors=True)
    assert not sshd.processes(), "processes left on the host after `ray down`"
    assert listening and not watch.not_loopback(), watch.not_loopback()
