"""A loopback master address keeps training's rendezvous on loopback (training/rendezvous.py); a real one is left
to torch's env:// rendezvous."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.rendezvous import init_loopback_process_group, loopback_ip

REPO = Path(__file__).resolve().parents[2]
# A plain `python training/run.py`: a world of one on 127.0.0.1, set up by training.engine.init_distributed.
LISTENING = """
import json, os, psutil, torch
from training.engine import init_distributed
init_distributed()
t = torch.ones(2); torch.distributed.all_reduce(t)
print(json.dumps(sorted({(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN and c.pid == os.getpid()})))
"""


@pytest.mark.parametrize("host, ip", [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("::1", "::1"),
                                      ("127.0.1.1", "127.0.1.1"), ("10.0.0.10", None), ("node-0", None),
                                      ("0.0.0.0", None), ("", None)])
def test_loopback_ip(host, ip):
    assert loopback_ip(host) == ip


def test_a_real_master_address_is_left_to_env_rendezvous(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.10")
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    assert init_loopback_process_group("gloo") is False
    assert "GLOO_SOCKET_IFNAME" not in os.environ  # nothing pinned to loopback


def test_a_loopback_master_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-c", LISTENING], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listening = json.loads(proc.stdout.strip().splitlines()[-1])
    assert listening, "the rendezvous store did not listen at all"
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
