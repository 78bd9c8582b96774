"""Fixtures of the multi-node rehearsals: a test-owned sshd, the sample videos they preprocess and the one-node
reference index, and a watcher of the TCP ports a job's processes listen on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
# Four good videos (five clips) and two bad ones of the sample set: enough work to spread over two nodes and to
# lose a node in the middle of, small enough for a 2-core machine.
MULTINODE_VIDEOS = ("good_carphone_a0009.mp4", "good_astronaut_a0007.mp4", "good_carphone_espeak1.mp4",
                    "good_astronaut_espeak2.mp4", "bad_no_face.mp4", "bad_not_a_video.mp4")
# Runtime-only settings (left out of index.json): 2 CPU slots per node, a small clip window for 2 cores.
PREPROCESS_OVERRIDES = ("num_workers=2", "max_clips_in_flight=4", "progress_every_s=5")


def short_tmp(prefix: str) -> Path:
    """A short folder under /tmp: Ray and sshd put unix sockets below it (108-byte path limit)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def tree(pids: Iterable[int]) -> set[int]:
    """The processes ``pids`` and all their descendants alive now."""
    found = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found |= {root.pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.Error:
            continue
    return found


class ListenWatch:
    """Samples, every 0.3 s while a job runs, the TCP addresses the processes given by ``pids()`` listen on."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self.pids, self.listening = pids, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self.pids()
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
                    self.listening.add((conn.laddr.ip, conn.laddr.port))
            self._stop.wait(0.3)

    def stop(self) -> set[tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        return self.listening

    def not_loopback(self) -> set[tuple[str, int]]:
        return {(ip, port) for ip, port in self.listening if ip not in LOOPBACK}


@pytest.fixture(scope="module")
def sshd():
    """sshd on 127.0.0.1 (tests/infra/sshd.py); stopped, with everything it ran, at the end of the module."""
    from tests.infra.sshd import missing_tools, start_sshd

    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian openssh-server, openssh-client, rsync, pdsh: "
                    "scripts/setup.sh installs them)")
    server = start_sshd(short_tmp("vxs"))
    yield server
    server.stop()
    assert not server.processes(), "processes left on the test sshd"
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def multinode_inputs(sample_data_dir, tmp_path_factory) -> Path:
    listing = tmp_path_factory.mktemp("multinode") / "inputs.txt"
    listing.write_text("".join(f"{sample_data_dir / name}\n" for name in MULTINODE_VIDEOS))
    return listing


def run_preprocess(inputs: Path, out: Path, *extra: str, env: dict | None = None,
                   timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "infra" / "preprocess.py"), "--input", str(inputs), "--output", str(out),
           *PREPROCESS_OVERRIDES, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def one_node_output(multinode_inputs, tmp_path_factory) -> Path:
    """The reference: the same inputs on the embedded single-node Ray (no ``--address``)."""
    out = tmp_path_factory.mktemp("one_node") / "out"
    t0 = time.perf_counter()
    proc = run_preprocess(multinode_inputs, out, f"ray_temp_dir={short_tmp('vxr')}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    print(f"one-node job (embedded Ray): {time.perf_counter() - t0:.1f} s")
    return out
